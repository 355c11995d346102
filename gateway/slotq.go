package gateway

import (
	"container/list"
	"sync"
)

// slotQueue wakes requests waiting for a slot one at a time, the longest
// waiting first. A slot given back wakes one waiter, not all of them: with
// a broadcast, an overloaded gateway holding a thousand waiting requests
// spent its cores waking a thousand goroutines per freed slot, of which one
// could use it (congestion collapse: goodput fell to a tenth of its peak in
// the overload benchmark).
//
// A waiter joins before it looks for a slot (so a slot freed meanwhile is
// not missed) and leaves when it stops waiting. One that was handed a wake
// it does not act on (it found a slot by itself, the registry changed, its
// deadline came) passes it on as it leaves, so a freed slot never goes
// unnoticed while others wait. One that acted on its wake and still found
// no slot (another request took it first) joins again at the back.
type slotQueue struct {
	mu sync.Mutex
	l  list.List // of *slotWaiter
}

// slotWaiter is one waiting request's place in a slotQueue.
type slotWaiter struct {
	// C receives the waiter's wake (at most one).
	C chan struct{}
	q *slotQueue
	e *list.Element // nil once woken or left
}

// join queues a new waiter at the back.
func (q *slotQueue) join() *slotWaiter {
	w := &slotWaiter{C: make(chan struct{}, 1), q: q}
	q.mu.Lock()
	w.e = q.l.PushBack(w)
	q.mu.Unlock()
	return w
}

// wake hands a wake to the longest waiter, if any waits.
func (q *slotQueue) wake() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.l.Front(); e != nil {
		w := q.l.Remove(e).(*slotWaiter)
		w.e = nil
		w.C <- struct{}{}
	}
}

// waiting is how many wait (tests).
func (q *slotQueue) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.l.Len()
}

// leave takes w out of its queue; a wake it was handed and did not
// receive goes to the next waiter. Safe to call more than once and on nil.
func (w *slotWaiter) leave() {
	if w == nil {
		return
	}
	q := w.q
	q.mu.Lock()
	if w.e != nil {
		q.l.Remove(w.e)
		w.e = nil
		q.mu.Unlock()
		return
	}
	q.mu.Unlock()
	select {
	case <-w.C:
		q.wake()
	default:
	}
}
