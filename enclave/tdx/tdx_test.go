package tdx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/client"
	tdxtest "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"

	atdx "github.com/teegate/teegate/attest/tdx"
	"github.com/teegate/teegate/enclave"
)

// The fakes of go-tdx-guest's testing package replay a real production
// quote (Sapphire Rapids, PCK Platform CA) captured by Google: module
// github.com/google/go-tdx-guest v0.3.1, testing/testdata/
// tdx_prod_quote_SPR_E4.dat, Apache-2.0; it is also
// /work/shared/testdata/attestation/tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat
// (sha256[:16]=6dde5548bec99147). Its PCK leaf is valid until 2029-09-20.
const quoteSHA256Prefix = "6dde5548bec99147"

var verifyAt = time.Date(2025, 6, 20, 0, 0, 0, 0, time.UTC)

// fakeCase is go-tdx-guest's test case with its input replaced by the
// report data the real quote carries: its own case pairs the quote with
// other report data, and a quoter must refuse that (see TestQuoteErrors).
func fakeCase(t testing.TB) tdxtest.TestCase {
	t.Helper()
	tcs := tdxtest.TestCases()
	if len(tcs) == 0 {
		t.Fatal("go-tdx-guest has no test cases")
	}
	tc := tcs[0]
	sum := sha256.Sum256(tc.Quote)
	if got := hex.EncodeToString(sum[:8]); got != quoteSHA256Prefix {
		t.Fatalf("replayed quote sha256 prefix %s, want %s", got, quoteSHA256Prefix)
	}
	q, err := atdx.ParseQuote(tc.Quote)
	if err != nil {
		t.Fatal(err)
	}
	tc.Input = q.Body.ReportData
	return tc
}

func fakeDevice(t testing.TB) client.Device {
	t.Helper()
	d, err := tdxtest.TcDevice([]tdxtest.TestCase{fakeCase(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Open(""); err != nil {
		t.Fatal(err)
	}
	return d
}

func fakeProvider(t testing.TB) client.QuoteProvider {
	t.Helper()
	p, err := tdxtest.TcQuoteProvider([]tdxtest.TestCase{fakeCase(t)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func upstreamProvider(t testing.TB) client.QuoteProvider {
	t.Helper()
	p, err := tdxtest.TcQuoteProvider(tdxtest.TestCases())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestQuoteVerifies(t *testing.T) {
	tc := fakeCase(t)
	for _, q := range []struct {
		name   string
		quoter *Quoter
		iface  string
	}{
		{"device", FromDevice(fakeDevice(t)), InterfaceDevice},
		{"configfs provider", FromProvider(fakeProvider(t)), InterfaceConfigfs},
	} {
		t.Run(q.name, func(t *testing.T) {
			defer q.quoter.Close()
			if q.quoter.Interface() != q.iface || q.quoter.Kind() != "tdx" {
				t.Fatalf("interface %q kind %q", q.quoter.Interface(), q.quoter.Kind())
			}
			ev, err := q.quoter.CPUEvidence(context.Background(), tc.Input)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Format != enclave.KindTDX || ev.SimulatedRoots != nil {
				t.Fatalf("format %q, simulated roots %v", ev.Format, ev.SimulatedRoots)
			}
			if !bytes.Equal(ev.Raw, testdata.RawQuote) {
				t.Fatal("quote differs from the replayed one")
			}
			c, err := atdx.Verify(context.Background(), ev.Raw, atdx.Options{Now: func() time.Time { return verifyAt }})
			if err != nil {
				t.Fatalf("produced quote does not verify: %v", err)
			}
			if c.ReportData != hex.EncodeToString(tc.Input[:]) {
				t.Fatalf("report data %s", c.ReportData)
			}
		})
	}
}

// fixed is a source that returns the same bytes for any report data.
func fixed(raw []byte, err error) source {
	return source{name: "test", quote: func([64]byte) ([]byte, error) { return raw, err }}
}

func TestQuoteErrors(t *testing.T) {
	tc := fakeCase(t)
	other := tc.Input
	other[0] ^= 1
	flipped := bytes.Clone(testdata.RawQuote)
	flipped[0] ^= 0xff // version 4 -> something else
	for _, c := range []struct {
		name string
		q    *Quoter
		rd   [64]byte
		want error
	}{
		{"device has no quote for this report data", FromDevice(fakeDevice(t)), other, ErrQuoteFailed},
		{"go-tdx-guest's own case: quote over other report data", FromProvider(upstreamProvider(t)), tdxtest.TestCases()[0].Input, ErrReportDataMismatch},
		{"provider returns nothing", FromProvider(fakeProvider(t)), other, atdx.ErrQuoteFormat},
		{"quote over other report data", newQuoter(fixed(testdata.RawQuote, nil), 0), other, ErrReportDataMismatch},
		{"not a TDX quote", newQuoter(fixed(flipped, nil), 0), tc.Input, atdx.ErrUnsupportedVersion},
		{"truncated", newQuoter(fixed(testdata.RawQuote[:100], nil), 0), tc.Input, atdx.ErrQuoteFormat},
		{"driver error", newQuoter(fixed(nil, syscall.EIO), 0), tc.Input, syscall.EIO},
		{"busy forever", newQuoter(fixed(nil, syscall.EBUSY), 1), tc.Input, syscall.EBUSY},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.q.Quote(context.Background(), c.rd)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

func TestBusyRetried(t *testing.T) {
	tc := fakeCase(t)
	var calls atomic.Int32
	q := newQuoter(source{name: "test", quote: func([64]byte) ([]byte, error) {
		if calls.Add(1) < 3 {
			return nil, fmt.Errorf("writing inblob: %w", syscall.EBUSY)
		}
		return testdata.RawQuote, nil
	}}, 0)
	if _, err := q.Quote(context.Background(), tc.Input); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d calls, want 3", calls.Load())
	}
	calls.Store(0)
	q = newQuoter(source{name: "test", quote: func([64]byte) ([]byte, error) {
		calls.Add(1)
		return nil, syscall.EBUSY
	}}, -1)
	if _, err := q.Quote(context.Background(), tc.Input); !errors.Is(err, syscall.EBUSY) || calls.Load() != 1 {
		t.Fatalf("err %v after %d calls, want EBUSY after 1", err, calls.Load())
	}
}

func TestContextAndClose(t *testing.T) {
	tc := fakeCase(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	q := newQuoter(source{name: "test", quote: func([64]byte) ([]byte, error) {
		entered <- struct{}{}
		<-release
		return testdata.RawQuote, nil
	}}, 0)

	// A cancelled request returns at once while the kernel call goes on.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := q.Quote(ctx, tc.Input); errc <- err }()
	<-entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	// The next request waits for the interface, and can give up waiting.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer wcancel()
	if _, err := q.Quote(wctx, tc.Input); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
	close(release)
	if _, err := q.Quote(context.Background(), tc.Input); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := q.Quote(context.Background(), tc.Input); !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v after Close, want ErrClosed", err)
	}
}

func TestCloseClosesDevice(t *testing.T) {
	d := fakeDevice(t)
	q := FromDevice(d)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// go-tdx-guest's fake refuses to close twice: it was closed once.
	if err := d.Close(); err == nil {
		t.Fatal("device still open after Close")
	}
}

// TestOpenHere runs the real discovery on this machine. On a TD it must
// find an interface; anywhere else it must fail with ErrNoDevice.
func TestOpenHere(t *testing.T) {
	q, err := Open(context.Background(), Options{DevicePath: t.TempDir() + "/tdx_guest", DisableConfigfs: true})
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Open with a missing device: %v, want ErrNoDevice", err)
	}
	q, err = Open(context.Background(), Options{})
	if err != nil {
		if !errors.Is(err, ErrNoDevice) {
			t.Fatalf("Open: %v, want ErrNoDevice outside a TD", err)
		}
		t.Logf("not a TD: %v", err)
		return
	}
	t.Logf("TD quote interface: %s", q.Interface())
	q.Close()
}

func FuzzCheckQuote(f *testing.F) {
	tc := fakeCase(f)
	f.Add(testdata.RawQuote, tc.Input[:])
	f.Add(testdata.RawQuote[:600], make([]byte, 64))
	f.Fuzz(func(t *testing.T, raw, rd []byte) {
		var want [64]byte
		copy(want[:], rd)
		out, err := checkQuote(raw, want)
		if err == nil && !bytes.Equal(out, raw) {
			t.Fatal("accepted quote altered")
		}
	})
}

func BenchmarkQuoteFakeDevice(b *testing.B) {
	tc := fakeCase(b)
	q := FromDevice(fakeDevice(b))
	defer q.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Quote(context.Background(), tc.Input); err != nil {
			b.Fatal(err)
		}
	}
}
