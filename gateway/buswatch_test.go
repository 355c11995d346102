package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker/wire"
)

// freeAddr is a loopback address nothing listens on (for a server started
// later in the test).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not closed", what)
	}
}

// The watch follows the connection in generations: its channel closes when
// the server goes, a new open one comes with the reconnection.
func TestBusWatchGenerations(t *testing.T) {
	a, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	second := freeAddr(t)
	nc, err := nats.Connect(a.ClientURL()+",nats://"+second, nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b := watchBus(nc)
	up, lost := b.current()
	if !up {
		t.Fatal("a connected connection is not up")
	}
	a.Shutdown()
	waitClosed(t, lost, "the generation of a connection whose server went")
	if up, now := b.current(); up {
		t.Fatal("up while the server is gone")
	} else {
		waitClosed(t, now, "the channel while down")
	}
	s2, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: second})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	eventually(t, 10*time.Second, func() bool { up, _ := b.current(); return up }, "up again after the reconnection")
	if _, next := b.current(); isClosed(next) {
		t.Fatal("the new generation's channel is closed")
	}
	nc.Close()
	waitClosed(t, b.busLostOf(), "the generation of a closed connection")
}

// busLostOf is the current generation's channel (test helper).
func (b *busWatch) busLostOf() <-chan struct{} {
	_, lost := b.current()
	return lost
}

// A request whose worker holds it while the gateway loses its server ends
// at once with a retryable 503 bus_unavailable (not at its deadline), and
// a request arriving while the gateway is cut off is refused the same way.
func TestRequestEndsWhenTheBusIsLost(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "unary", true: "stream"}[stream], func(t *testing.T) { busLost(t, stream) })
	}
}

func busLost(t *testing.T, stream bool) {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("gw", nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	wk, err := srv.Connect("worker")
	if err != nil {
		t.Fatal(err)
	}
	defer wk.Close()
	// A worker that takes requests and never answers.
	got := make(chan struct{}, 4)
	if _, err := wk.Subscribe(wire.InferSubject("m"), func(*nats.Msg) { got <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := wk.Flush(); err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{Conn: nc, Keys: fakeKeys{"user": {Name: "u"}}, Unattested: true,
		Directory: fakeDir{{ID: "w", Models: []wire.ModelInfo{{ID: "m"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":%t}`, stream)
	res := make(chan *http.Response, 1)
	go func() { res <- post(t, g, body) }()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker got no request")
	}
	srv.Shutdown()
	select {
	case r := <-res:
		checkBusLost(t, r)
	case <-time.After(10 * time.Second):
		t.Fatal("the request still waits after the gateway lost its server")
	}
	// Cut off: refused at once.
	checkBusLost(t, post(t, g, body))
}

func post(t *testing.T, g *Gateway, body string) *http.Response {
	req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer user")
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.App().Test(req, -1)
	if err != nil {
		t.Error(err)
		return nil
	}
	return resp
}

func checkBusLost(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp == nil {
		t.FailNow()
	}
	raw, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if resp.StatusCode != 503 || json.Unmarshal(raw, &e) != nil || e.Error.Code != "bus_unavailable" || e.Error.Message == "" ||
		resp.Header.Get("Retry-After") == "" {
		t.Fatalf("got %d %v %s, want 503 bus_unavailable with Retry-After", resp.StatusCode, resp.Header, raw)
	}
}

// A reconnection the watch did not see happen (down and up again between
// two looks) still ends the generation: replies sent meanwhile are lost.
func TestBusWatchBlip(t *testing.T) {
	b := &busWatch{up: true, lost: make(chan struct{})}
	_, first := b.current()
	b.set(true, 0)
	select {
	case <-first:
		t.Fatal("no change ended the generation")
	default:
	}
	b.set(true, 1)
	waitClosed(t, first, "the generation before an unseen reconnection")
	up, next := b.current()
	if !up {
		t.Fatal("down after the reconnection")
	}
	select {
	case <-next:
		t.Fatal("the new generation is closed")
	default:
	}
	b.set(false, 1)
	waitClosed(t, next, "the generation of a connection that went down")
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
