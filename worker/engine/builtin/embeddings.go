package builtin

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/teegate/teegate/worker/engine"
)

// Feature weights of the hashed embedding: whole words carry the meaning,
// word pairs add a little order, character trigrams let inflections
// ("lighthouse", "lighthouses") land near each other.
const (
	wWord    = 1.0
	wBigram  = 0.6
	wTrigram = 0.25
)

func (e *Engine) embed(body []byte) ([]byte, error) {
	var req embeddingRequest
	if err := decodeJSON(body, &req, ""); err != nil {
		return nil, err
	}
	if err := checkModel(e, req.Model); err != nil {
		return nil, err
	}
	inputs, err := e.parseInputs(req.Input)
	if err != nil {
		return nil, err
	}
	dims := e.cfg.EmbeddingDims
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > dims {
			return nil, engine.InvalidRequest("dimensions", "Invalid 'dimensions': expected a value between 1 and %d.", dims)
		}
		dims = *req.Dimensions
	}
	b64 := false
	if req.EncodingFormat != nil {
		switch *req.EncodingFormat {
		case "float":
		case "base64":
			b64 = true
		default:
			return nil, engine.InvalidRequest("encoding_format", "Invalid value for 'encoding_format': supported values are 'float' and 'base64'.")
		}
	}
	promptTokens := 0
	for _, in := range inputs {
		promptTokens += len(in)
	}
	vec := make([]float64, dims)
	raw := make([]byte, 4*dims)
	b := make([]byte, 0, 128+len(inputs)*(dims*12+64))
	b = append(b, `{"object":"list","data":[`...)
	for i, toks := range inputs {
		e.m.featurize(vec, toks)
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":`...)
		if b64 {
			for j, v := range vec {
				binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(float32(v)))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, v := range vec {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendFloat32(b, float32(v))
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendString(b, e.cfg.ModelID)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(promptTokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(promptTokens), 10)
	return append(b, `}}`...), nil
}

// appendFloat32 formats like encoding/json does for float32: shortest
// round-trip digits, exponent form only for very small or large values.
func appendFloat32(b []byte, f float32) []byte {
	abs := math.Abs(float64(f))
	fmt := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		fmt = 'e'
	}
	return strconv.AppendFloat(b, float64(f), fmt, -1, 32)
}

// parseInputs returns each input's token texts. It accepts a string, an
// array of strings, an array of token ids, or an array of arrays of ids.
func (e *Engine) parseInputs(raw json.RawMessage) ([][]string, *engine.Error) {
	bad := engine.InvalidRequest("input", "Invalid type for 'input': expected a string, an array of strings, an array of integers or an array of arrays of integers.")
	if isNull(raw) {
		return nil, missing("input")
	}
	empty := engine.InvalidRequest("input", "Invalid 'input': inputs must not be empty.")
	fromText := func(s string) ([]string, *engine.Error) {
		if s == "" {
			return nil, empty
		}
		_, toks, err := e.codec.Encode(s)
		if err != nil || len(toks) == 0 {
			return nil, engine.InvalidRequest("input", "Invalid 'input': the text cannot be tokenized.")
		}
		if len(toks) > MaxEmbeddingInputTokens {
			return nil, tooManyTokens(len(toks))
		}
		return toks, nil
	}
	fromIDs := func(ids []int64) ([]string, *engine.Error) {
		if len(ids) == 0 {
			return nil, empty
		}
		if len(ids) > MaxEmbeddingInputTokens {
			return nil, tooManyTokens(len(ids))
		}
		toks := make([]string, len(ids))
		one := make([]uint, 1)
		for i, id := range ids {
			if id < 0 || id > 1<<20 {
				return nil, engine.InvalidRequest("input", "Invalid 'input': token id out of range.")
			}
			one[0] = uint(id)
			t, err := e.codec.Decode(one)
			if err != nil {
				return nil, engine.InvalidRequest("input", "Invalid 'input': token id out of range.")
			}
			toks[i] = t
		}
		return toks, nil
	}
	switch firstByte(raw) {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, bad
		}
		t, err := fromText(s)
		if err != nil {
			return nil, err
		}
		return [][]string{t}, nil
	case '[':
	default:
		return nil, bad
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, bad
	}
	if len(items) == 0 {
		return nil, empty
	}
	if len(items) > MaxEmbeddingInputs {
		return nil, engine.InvalidRequest("input", "Invalid 'input': at most %d inputs are allowed per request.", MaxEmbeddingInputs)
	}
	var out [][]string
	switch firstByte(items[0]) {
	case '"':
		var ss []string
		if json.Unmarshal(raw, &ss) != nil {
			return nil, bad
		}
		for _, s := range ss {
			t, err := fromText(s)
			if err != nil {
				return nil, err
			}
			out = append(out, t)
		}
	case '[':
		var lists [][]int64
		if json.Unmarshal(raw, &lists) != nil {
			return nil, bad
		}
		for _, l := range lists {
			t, err := fromIDs(l)
			if err != nil {
				return nil, err
			}
			out = append(out, t)
		}
	default:
		var ids []int64
		if json.Unmarshal(raw, &ids) != nil {
			return nil, bad
		}
		t, err := fromIDs(ids)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func tooManyTokens(n int) *engine.Error {
	return engine.InvalidRequest("input", "Invalid 'input': an input has %d tokens, more than the %d this model accepts.", n, MaxEmbeddingInputTokens)
}

// featurize fills vec with the L2-normalized hashed features of one input.
// Each feature hashes to a bucket and a sign (the "hashing trick"), so
// unrelated features cancel out on average instead of piling up. Words are
// weighted by their rarity in the corpus, so shared function words do not
// make unrelated texts look alike.
func (m *model) featurize(vec []float64, toks []string) {
	clear(vec)
	dims := uint64(len(vec))
	add := func(h uint64, w float64) {
		h = mix64(h)
		if h>>63 != 0 {
			w = -w
		}
		vec[(h&0x7fffffffffffffff)%dims] += w
	}
	text := strings.Join(toks, "")
	var prev uint64
	var prevW float64
	var padded []byte
	words := 0
	forWords(text, 1, true, func(w string) {
		idf := m.idf(w)
		h := fnv64(fnvOffset, []byte(w))
		add(h, wWord*idf)
		if words > 0 {
			add(h*31^prev^0xb16, wBigram*min(idf, prevW))
		}
		prev, prevW = h, idf
		words++
		if len(w) >= 3 {
			padded = append(append(append(padded[:0], '<'), w...), '>')
			for j := 0; j+3 <= len(padded); j++ {
				add(fnv64(0x7263, padded[j:j+3]), wTrigram*idf)
			}
		}
	})
	if words == 0 { // punctuation or whitespace only: hash the raw tokens
		for _, t := range toks {
			add(fnv64(0x70, []byte(t)), 1)
		}
	}
	norm := 0.0
	for _, v := range vec {
		norm += v * v
	}
	if norm == 0 { // every feature cancelled out: still return a unit vector
		vec[0] = 1
		return
	}
	inv := 1 / math.Sqrt(norm)
	for j := range vec {
		vec[j] *= inv
	}
}
