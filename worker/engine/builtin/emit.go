package builtin

import (
	"bytes"
	"unicode/utf8"
)

// emitter turns sampled token bytes into client-visible text deltas. It holds
// back bytes that could still become part of a stop sequence and bytes that
// end in the middle of a UTF-8 rune, so a stream never shows text that the
// non-stream answer would not contain; streams and non-stream answers both
// run through it, which makes their texts identical by construction.
type emitter struct {
	stops    [][]byte
	pending  []byte
	trimLead bool // drop leading whitespace (chat replies), until text shows
	out      []byte
}

// push adds one token's bytes. It returns the text that may be shown now
// (valid only until the next call) and whether a stop sequence ended the
// choice. last releases everything held, as the choice ends with this token.
func (em *emitter) push(tok string, last bool) (delta []byte, stopped bool) {
	em.pending = append(em.pending, tok...)
	cut := len(em.pending)
	for _, s := range em.stops {
		if i := bytes.Index(em.pending, s); i >= 0 && i < cut {
			cut = i
			stopped = true
		}
	}
	if stopped {
		d := em.flush(em.pending[:cut])
		em.pending = em.pending[:0]
		return d, true
	}
	if last {
		d := em.flush(em.pending)
		em.pending = em.pending[:0]
		return d, false
	}
	hold := 0
	for _, s := range em.stops {
		hold = max(hold, overlap(em.pending, s))
	}
	n := utf8Prefix(em.pending[:len(em.pending)-hold])
	d := em.flush(em.pending[:n])
	em.pending = append(em.pending[:0], em.pending[n:]...)
	return d, false
}

// flush sanitizes b into em.out: invalid UTF-8 becomes U+FFFD (b always ends
// on a rune boundary or at the end of the text, so splitting never changes
// the result), and leading whitespace is dropped while trimLead is set.
func (em *emitter) flush(b []byte) []byte {
	em.out = em.out[:0]
	if em.trimLead {
		b = bytes.TrimLeft(b, " \t\r\n")
		if len(b) == 0 {
			return em.out
		}
		em.trimLead = false
	}
	if utf8.Valid(b) {
		em.out = append(em.out, b...)
		return em.out
	}
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			em.out = utf8.AppendRune(em.out, utf8.RuneError)
		} else {
			em.out = append(em.out, b[:size]...)
		}
		b = b[size:]
	}
	return em.out
}

// overlap is the length of the longest suffix of b that is a proper prefix
// of stop: bytes that may still grow into the stop sequence.
func overlap(b, stop []byte) int {
	for k := min(len(b), len(stop)-1); k > 0; k-- {
		if bytes.Equal(b[len(b)-k:], stop[:k]) {
			return k
		}
	}
	return 0
}

// utf8Prefix returns the length of the longest prefix of b that does not end
// inside an incomplete (but so far valid) multi-byte rune.
func utf8Prefix(b []byte) int {
	n := len(b)
	for i := n - 1; i >= 0 && i >= n-3; i-- {
		c := b[i]
		if c < 0x80 {
			return n
		}
		if c >= 0xC0 {
			need := 0
			switch {
			case c >= 0xF0:
				need = 4
			case c >= 0xE0:
				need = 3
			default:
				need = 2
			}
			if n-i < need {
				return i
			}
			return n
		}
	}
	return n
}
