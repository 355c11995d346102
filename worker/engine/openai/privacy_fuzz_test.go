package openai

import (
	"bytes"
	"encoding/json"
	"testing"
)

// NormalizeError relays an upstream error's message, param and code and
// nothing else: fields such as FastAPI's "input" and "ctx" or a proxy's
// echo of the request may hold the prompt. Non-interference: changing those
// other fields never changes the client-facing error.
func FuzzNormalizeErrorDropsOtherFields(f *testing.F) {
	f.Add(400, "bad request", "BadRequestError", "the whole prompt", uint8(0))
	f.Add(422, "field required", "missing", "a prompt", uint8(2))
	f.Add(500, "", "", "secret", uint8(4))
	f.Add(404, "model x not found", "NotFoundError", "", uint8(1))
	f.Add(400, "m", "t", "\u2028\x00", uint8(3))
	f.Fuzz(func(t *testing.T, status int, msg, typ, other string, shape uint8) {
		body := func(other string) []byte {
			m, _ := json.Marshal(msg)
			ty, _ := json.Marshal(typ)
			o, _ := json.Marshal(other)
			switch shape % 5 {
			case 0: // OpenAI's wrapped shape, plus echoes beside it
				return []byte(`{"error":{"message":` + string(m) + `,"type":` + string(ty) + `,"param":null,"code":null,"input":` + string(o) + `},"request":` + string(o) + `}`)
			case 1: // vLLM's flat shape
				return []byte(`{"object":"error","message":` + string(m) + `,"type":` + string(ty) + `,"input":` + string(o) + `,"body":` + string(o) + `}`)
			case 2: // FastAPI validation items
				return []byte(`{"detail":[{"loc":["body","messages",0],"msg":` + string(m) + `,"type":` + string(ty) + `,"input":` + string(o) + `,"ctx":{"said":` + string(o) + `}}]}`)
			case 3: // FastAPI detail object
				return []byte(`{"detail":{"msg":` + string(m) + `,"input":` + string(o) + `}}`)
			default: // {"error":"text"} with a sibling
				return []byte(`{"error":` + string(m) + `,"prompt":` + string(o) + `}`)
			}
		}
		a := NormalizeError(status, body(other))
		b := NormalizeError(status, body(""))
		if !bytes.Equal(a.Body(), b.Body()) || a.Status != b.Status {
			t.Fatalf("a field other than message/param/code reached the client:\n%s\n%s", a.Body(), b.Body())
		}
	})
}
