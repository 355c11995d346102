package builtin

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEmitter(t *testing.T) {
	cases := []struct {
		name    string
		stops   []string
		trim    bool
		tokens  []string
		deltas  []string
		stopped bool
	}{
		{"plain", nil, false, []string{"a", " b"}, []string{"a", " b"}, false},
		{"utf8 split", nil, false, []string{"x\xe2\x80", "\x94 y"}, []string{"x", "— y"}, false},
		{"utf8 4 bytes", nil, false, []string{"\xf0\x9f", "\x8c", "\x8a!"}, []string{"", "", "🌊!"}, false},
		{"invalid at end", nil, false, []string{"ok\xe2\x80"}, []string{"ok\ufffd\ufffd"}, false}, // last token flushes; one U+FFFD per bad byte, as encoding/json
		{"invalid middle", nil, false, []string{"\xe2\x80", "a"}, []string{"", "\ufffd\ufffda"}, false},
		{"stop spans tokens", []string{"END"}, false, []string{"abc E", "N", "D tail"}, []string{"abc ", "", ""}, true},
		{"stop false start", []string{"END"}, false, []string{"abc E", "x", "y"}, []string{"abc ", "Ex", "y"}, false},
		{"stop in token", []string{"."}, false, []string{"one", " two. three"}, []string{"one", " two"}, true},
		{"earliest stop", []string{"c", "b"}, false, []string{"abc"}, []string{"a"}, true},
		{"trim lead", nil, true, []string{" ", "\n", " Hi", " there"}, []string{"", "", "Hi", " there"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			em := emitter{trimLead: tc.trim}
			for _, s := range tc.stops {
				em.stops = append(em.stops, []byte(s))
			}
			var got []string
			stopped := false
			for i, tok := range tc.tokens {
				d, st := em.push(tok, i == len(tc.tokens)-1)
				got = append(got, string(d))
				if st {
					stopped = true
					break
				}
			}
			if strings.Join(got, "|") != strings.Join(tc.deltas, "|") || stopped != tc.stopped {
				t.Fatalf("deltas %q stopped %v, want %q %v", got, stopped, tc.deltas, tc.stopped)
			}
			for _, d := range got {
				if !utf8.ValidString(d) {
					t.Fatalf("invalid UTF-8 delta %q", d)
				}
			}
		})
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\" back\\ slash", "\n\r\t\x00\x1f\x7f", "café — 灯塔 🌊", "\u2028\u2029", "bad \xff\xfe utf8 \xe2\x80", "</script>&"} {
		b := appendString(nil, s)
		if !json.Valid(b) {
			t.Fatalf("%q -> invalid JSON %s", s, b)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil || back != strings.ToValidUTF8(s, "\ufffd") {
			// encoding/json replaces each invalid byte; ours too.
			want, _ := json.Marshal(s)
			var w string
			_ = json.Unmarshal(want, &w)
			if back != w {
				t.Fatalf("%q round-trips to %q, want %q", s, back, w)
			}
		}
		if string(appendString(nil, []byte(s))) != string(b) {
			t.Fatalf("string and []byte forms differ for %q", s)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\xff", "灯塔\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		want, _ := json.Marshal(s)
		var w string
		_ = json.Unmarshal(want, &w)
		if back != w {
			t.Fatalf("%q decodes to %q, encoding/json gives %q", s, back, w)
		}
	})
}
