package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
)

// stalledClient opens a stream request and never reads.
func stalledClient(t *testing.T, s *stack.Stack, model string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	body := chatBody(model, true)
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", stacktest.APIKey, len(body), body)
	return conn
}

// Attack 7: a stream client that never reads loses its connection (every
// flush to it is bounded) and does not hold up a shutdown.
func TestHostileStalledStreamClient(t *testing.T) {
	eng := enginetest.NewGated("slow")
	eng.Infinite = true
	s := stacktest.Start(t, stacktest.WithEngines(eng), func(c *stack.Config) { c.Gateway.WriteStall = 300 * time.Millisecond })
	conn := stalledClient(t, s, "slow")
	// The worker's generation stops: the gateway gave the client up …
	select {
	case <-eng.Closed:
	case <-time.After(90 * time.Second):
		t.Fatal("the stream of a client that reads nothing was never stopped")
	}
	// … and closed its connection: reading drains it to EOF.
	_ = conn.SetReadDeadline(time.Now().Add(90 * time.Second))
	if _, err := io.Copy(io.Discard, bufio.NewReader(conn)); err != nil {
		t.Fatalf("the stalled client's connection was kept open: %v", err)
	}
	// Shutdown does not wait on stalled streams either.
	_ = stalledClient(t, s, "slow")
	n := eng.Produced.Load()
	stacktest.Eventually(t, 30*time.Second, func() bool { return eng.Produced.Load() > n }, "the second stream to start")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		done <- s.Gateway.Shutdown(ctx)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("shutdown waited on a client that reads nothing")
	}
}
