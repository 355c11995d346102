package openai

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The request the worker sends upstream when it needs a stream's usage is
// exactly the recorded include_usage request of the same exchange.
func TestWithIncludeUsage(t *testing.T) {
	trs := loadTranscripts(t)
	got, err := WithIncludeUsage(trs["chat-stream"].request)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if json.Unmarshal(got, &a) != nil || json.Unmarshal(trs["chat-stream-usage"].request, &b) != nil || !reflect.DeepEqual(a, b) {
		t.Fatalf("got %s, want %s", got, trs["chat-stream-usage"].request)
	}
	// Other stream options stay; a false include_usage becomes true.
	got, err = WithIncludeUsage([]byte(`{"stream":true,"stream_options":{"include_usage":false,"x":1}}`))
	if err != nil || string(got) != `{"stream":true,"stream_options":{"include_usage":true,"x":1}}` {
		t.Fatalf("%s %v", got, err)
	}
	for _, bad := range []string{`[1]`, `{"stream_options":3}`, `{`} {
		if _, err := WithIncludeUsage([]byte(bad)); err == nil {
			t.Fatalf("%s accepted", bad)
		}
	}
}
