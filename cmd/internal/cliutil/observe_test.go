package cliutil

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestLoggerFormats(t *testing.T) {
	for _, tc := range []struct {
		format string
		json   bool
	}{{"json", true}, {"text", false}, {"auto", true}} { // auto on a buffer (not a terminal): JSON
		var buf bytes.Buffer
		log, err := NewLoggerFormat(&buf, "info", tc.format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello", "k", "v")
		isJSON := json.Valid(bytes.TrimSpace(buf.Bytes()))
		if isJSON != tc.json {
			t.Errorf("%s: %q", tc.format, buf.String())
		}
		if !tc.json && !strings.Contains(buf.String(), "msg=hello k=v") {
			t.Errorf("text: %q", buf.String())
		}
	}
	if _, err := NewLoggerFormat(&bytes.Buffer{}, "info", "xml"); err == nil {
		t.Error("unknown format accepted")
	}
	if _, err := NewLoggerFormat(&bytes.Buffer{}, "loud", "json"); err == nil {
		t.Error("unknown level accepted")
	}
}
