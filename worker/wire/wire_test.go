package wire

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestToken(t *testing.T) {
	cases := map[string]string{
		"teegate-builtin":         "teegate-builtin",
		"llama3.1:8b":             "llama3%2E1%3A8b",
		"meta-llama/Llama-3.1-8B": "meta-llama%2FLlama-3%2E1-8B",
		"a b*>":                   "a%20b%2A%3E",
		"":                        "%",
		"%":                       "%25",
		"Qwen/Qwen2.5-0.5B_Instr": "Qwen%2FQwen2%2E5-0%2E5B_Instr",
		"\x00\xff":                "%00%FF",
		"teegate.v1.infer.>":      "teegate%2Ev1%2Einfer%2E%3E",
		"modèle":                  "mod%C3%A8le",
		"x.y":                     "x%2Ey",
		"x%2Ey":                   "x%252Ey",
		"UPPER_lower-09":          "UPPER_lower-09",
		"tab\tnewline\n":          "tab%09newline%0A",
		"dots...":                 "dots%2E%2E%2E",
		"semi;colon,comma":        "semi%3Bcolon%2Ccomma",
		"unicode-✓":               "unicode-%E2%9C%93",
		"trailing-":               "trailing-",
		"_":                       "_",
		"very/long/path/name-1.0": "very%2Flong%2Fpath%2Fname-1%2E0",
	}
	for in, want := range cases {
		if got := Token(in); got != want {
			t.Errorf("Token(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"teegate-builtin", "a.b", "x/y:z", "", "%", "> *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := Token(s)
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("Token(%q) = %q is not one safe subject token", s, tok)
		}
		// Injective: decoding restores the input.
		if dec := untoken(tok); s != "" && dec != s {
			t.Fatalf("Token(%q) = %q decodes to %q", s, tok, dec)
		}
	})
}

func untoken(tok string) string {
	var b []byte
	for i := 0; i < len(tok); i++ {
		if tok[i] == '%' && i+2 < len(tok) {
			var v byte
			for _, c := range []byte(tok[i+1 : i+3]) {
				v <<= 4
				switch {
				case c >= '0' && c <= '9':
					v |= c - '0'
				case c >= 'A' && c <= 'F':
					v |= c - 'A' + 10
				}
			}
			b = append(b, v)
			i += 2
			continue
		}
		b = append(b, tok[i])
	}
	return string(b)
}

func TestDeadlineRoundTrip(t *testing.T) {
	h := nats.Header{}
	if _, ok := Deadline(h); ok {
		t.Fatal("absent deadline reported present")
	}
	want := time.UnixMilli(1795768664123)
	SetDeadline(h, want)
	got, ok := Deadline(h)
	if !ok || !got.Equal(want) {
		t.Fatalf("Deadline = %v %v, want %v", got, ok, want)
	}
	h.Set(HdrDeadline, "soon")
	if _, ok := Deadline(h); ok {
		t.Fatal("malformed deadline accepted")
	}
}

func TestIntHeader(t *testing.T) {
	h := nats.Header{}
	if IntHeader(h, HdrWindow, 7) != 7 {
		t.Fatal("default not used")
	}
	h.Set(HdrWindow, "-3")
	if IntHeader(h, HdrWindow, 7) != 7 {
		t.Fatal("negative accepted")
	}
	h.Set(HdrWindow, "12")
	if IntHeader(h, HdrWindow, 7) != 12 {
		t.Fatal("value not read")
	}
}

func TestValidEventName(t *testing.T) {
	for name, want := range map[string]bool{
		"response.output_text.delta": true, "teegate.receipt": true, "error": true, "a-b_C9": true,
		"": false, "a b": false, "a\nb": false, "a:b": false, "é": false, strings.Repeat("a", MaxEventName+1): false,
	} {
		if got := ValidEventName(name); got != want {
			t.Errorf("ValidEventName(%q) = %v", name, got)
		}
	}
}

func TestAckSubjectOK(t *testing.T) {
	const nk = "UABC"
	for subj, want := range map[string]bool{
		"_TGW.UABC.n1.abc":                      true,
		"_TGW.UABC.x":                           true,
		"_TGW.UABC":                             false,
		"_TGW.UABC.":                            false,
		"_TGW.UABC..x":                          false,
		"_TGW.UABD.x":                           false,
		"_TGW.UABCD.x":                          false,
		"_TGW.UABC.*":                           false,
		"_TGW.UABC.>":                           false,
		"$JS.API.STREAM.PURGE.KV_teegate_x":     false,
		"_INBOX.abc":                            false,
		"_TGW.UABC.a b":                         false,
		"_TGW.UABC." + strings.Repeat("a", 300): false,
	} {
		if got := AckSubjectOK(subj, nk); got != want {
			t.Errorf("AckSubjectOK(%q) = %v, want %v", subj, got, want)
		}
	}
	if AckSubjectOK("_TGW..x", "") {
		t.Error("an empty nkey owns nothing")
	}
}
