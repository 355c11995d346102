package gateway

import "testing"

func woken(w *slotWaiter) bool {
	select {
	case <-w.C:
		return true
	default:
		return false
	}
}

// A freed slot wakes the longest waiter alone; a wake handed to a waiter
// that leaves without taking it goes to the next; leaving unwoken wakes
// nobody.
func TestSlotQueueWakesOneInOrder(t *testing.T) {
	var q slotQueue
	a, b, c := q.join(), q.join(), q.join()
	q.wake()
	if !woken(a) || woken(b) || woken(c) {
		t.Fatal("one wake must reach the first waiter only")
	}
	a.leave() // took its wake: nothing passes on
	if woken(b) || woken(c) {
		t.Fatal("a waiter that took its wake passed it on")
	}
	q.wake() // to b, which leaves without taking it
	b.leave()
	if !woken(c) {
		t.Fatal("a wake left untaken was not passed on")
	}
	c.leave()
	d := q.join()
	d.leave() // never woken: removed, wakes nobody
	e := q.join()
	q.wake()
	if !woken(e) {
		t.Fatal("a waiter that left unwoken still took a wake")
	}
	e.leave()
	if n := q.waiting(); n != 0 {
		t.Fatalf("%d waiters left in the queue", n)
	}
	q.wake() // nobody waits: no panic, nothing kept
	var nilw *slotWaiter
	nilw.leave()
}

// A thousand waiters and a thousand wakes: every waiter is woken exactly
// once (no wake lost, none doubled).
func TestSlotQueueNoLostWakes(t *testing.T) {
	var q slotQueue
	const n = 1000
	ws := make([]*slotWaiter, n)
	for i := range ws {
		ws[i] = q.join()
	}
	done := make(chan int, n)
	for i := range ws {
		go func() {
			<-ws[i].C
			ws[i].leave()
			done <- i
		}()
	}
	for range n {
		q.wake()
	}
	seen := map[int]bool{}
	for range n {
		i := <-done
		if seen[i] {
			t.Fatalf("waiter %d woken twice", i)
		}
		seen[i] = true
	}
	if q.waiting() != 0 {
		t.Fatalf("%d still waiting", q.waiting())
	}
}
