package builtin

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"testing"
)

type embResp struct {
	Object string `json:"object"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Model string `json:"model"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func embeddings(t *testing.T, body string) (embResp, [][]float64) {
	t.Helper()
	e := testEngine(t)
	b := mustBody(t, e, embOp, body)
	var r embResp
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if r.Object != "list" || r.Model != DefaultModelID {
		t.Fatalf("shape: %s", b)
	}
	var vecs [][]float64
	for i, d := range r.Data {
		if d.Object != "embedding" || d.Index != i {
			t.Fatalf("item %d: %+v", i, d)
		}
		var v []float64
		if d.Embedding[0] == '"' {
			var s string
			_ = json.Unmarshal(d.Embedding, &s)
			raw, err := base64.StdEncoding.DecodeString(s)
			if err != nil || len(raw)%4 != 0 {
				t.Fatalf("base64: %v", err)
			}
			for k := 0; k < len(raw); k += 4 {
				v = append(v, float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[k:]))))
			}
		} else if err := json.Unmarshal(d.Embedding, &v); err != nil {
			t.Fatal(err)
		}
		vecs = append(vecs, v)
	}
	return r, vecs
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func TestEmbeddings(t *testing.T) {
	e := testEngine(t)
	r, v := embeddings(t, `{"model":"teegate-builtin","input":["The lighthouse keeper trimmed the wick.","A lighthouse keeper trims wicks at night.","Knead the dough and let the bread rise."]}`)
	if len(v) != 3 {
		t.Fatalf("%d vectors", len(v))
	}
	want := 0
	for _, s := range []string{"The lighthouse keeper trimmed the wick.", "A lighthouse keeper trims wicks at night.", "Knead the dough and let the bread rise."} {
		n, _ := e.codec.Count(s)
		want += n
	}
	if r.Usage.PromptTokens != want || r.Usage.TotalTokens != want {
		t.Fatalf("usage %+v, want %d", r.Usage, want)
	}
	for i, x := range v {
		if len(x) != DefaultEmbeddingDims {
			t.Fatalf("dims %d", len(x))
		}
		if n := math.Sqrt(dot(x, x)); math.Abs(n-1) > 1e-5 {
			t.Fatalf("vector %d norm %v", i, n)
		}
	}
	if near, far := dot(v[0], v[1]), dot(v[0], v[2]); near <= far+0.1 {
		t.Fatalf("related texts %.3f not closer than unrelated %.3f", near, far)
	}

	// dimensions and base64 give the same numbers as floats.
	_, f := embeddings(t, `{"model":"teegate-builtin","input":"harbour café","dimensions":48}`)
	_, b := embeddings(t, `{"model":"teegate-builtin","input":"harbour café","dimensions":48,"encoding_format":"base64"}`)
	if len(f[0]) != 48 || len(b[0]) != 48 {
		t.Fatalf("dims %d %d", len(f[0]), len(b[0]))
	}
	for i := range f[0] {
		if float32(f[0][i]) != float32(b[0][i]) {
			t.Fatalf("base64 and float disagree at %d: %v %v", i, f[0][i], b[0][i])
		}
	}

	// Token-id input embeds exactly like the text it encodes.
	ids, _, _ := e.codec.Encode("harbour café")
	idsJSON, _ := json.Marshal(ids)
	_, tv := embeddings(t, `{"model":"teegate-builtin","input":`+string(idsJSON)+`,"dimensions":48}`)
	_, tv2 := embeddings(t, `{"model":"teegate-builtin","input":[`+string(idsJSON)+`,[9906]],"dimensions":48}`)
	for i := range f[0] {
		if tv[0][i] != f[0][i] || tv2[0][i] != f[0][i] {
			t.Fatalf("token input differs at %d", i)
		}
	}

	// Deterministic.
	_, again := embeddings(t, `{"model":"teegate-builtin","input":"harbour café","dimensions":48}`)
	for i := range f[0] {
		if again[0][i] != f[0][i] {
			t.Fatal("not deterministic")
		}
	}
	// Whitespace-only input still yields a unit vector.
	_, ws := embeddings(t, `{"model":"teegate-builtin","input":"   "}`)
	if n := math.Sqrt(dot(ws[0], ws[0])); math.Abs(n-1) > 1e-5 {
		t.Fatalf("whitespace norm %v", n)
	}
}

func TestAppendFloat32MatchesEncodingJSON(t *testing.T) {
	for _, f := range []float32{0, 1, -1, 0.1, 1e-7, -3.4e-9, 123456.78, 1e21, 0.0625, float32(math.Pi)} {
		want, _ := json.Marshal(f)
		if got := string(appendFloat32(nil, f)); got != string(want) && !json.Valid([]byte(got)) {
			t.Fatalf("%v: got %s want %s", f, got, want)
		}
		var back float32
		if err := json.Unmarshal(appendFloat32(nil, f), &back); err != nil || back != f {
			t.Fatalf("%v does not round-trip: %v %v", f, back, err)
		}
	}
}
