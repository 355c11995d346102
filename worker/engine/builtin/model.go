package builtin

import (
	"errors"
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// triWeight is the trigram share of the interpolated distribution; the rest
// goes to the bigram. Below 1 so the text can leave the corpus's exact
// sentences and recombine them, above 0.5 so it stays mostly grammatical.
const triWeight = 0.7

// model is a trigram/bigram language model over the corpus's BPE tokens,
// renumbered densely ("local" ids) so tables are small slices. The corpus is
// treated as a ring, so every token has a successor and generation never
// runs out of context.
type model struct {
	seq     []int32        // corpus as local ids
	pieces  []string       // local id -> token bytes (may be part of a UTF-8 rune)
	toLocal map[uint]int32 // cl100k id -> local id

	// Bigram successors of b: bigNext/bigCount[bigStart[b]:bigStart[b+1]],
	// sorted by count descending then id, so greedy ties resolve stably.
	bigStart []int32
	bigNext  []int32
	bigCount []int32
	bigTotal []float64

	// Trigram successors of (a,b): tri[pair(a,b)] = r, entries
	// triStart[r]:triStart[r+1]; triPos is the absolute index of the same
	// successor in the bigram arrays, so interpolation is one indexed add.
	tri      map[uint64]int32
	triStart []int32
	triPos   []int32
	triCount []int32
	triTotal []float64

	maxBranch int

	// Sentences, for steering chat replies toward the prompt's topic.
	sentStart []int32            // corpus position of each sentence's first token
	wordSents map[string][]int32 // normalized word -> sentence indices, ascending
}

func pair(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func buildModel(ids []uint, toks []string) (*model, error) {
	if len(ids) < 3 || len(ids) != len(toks) {
		return nil, errors.New("corpus too short")
	}
	m := &model{toLocal: make(map[uint]int32), tri: make(map[uint64]int32)}
	m.seq = make([]int32, len(ids))
	for i, id := range ids {
		l, ok := m.toLocal[id]
		if !ok {
			l = int32(len(m.pieces))
			m.toLocal[id] = l
			m.pieces = append(m.pieces, toks[i])
		}
		m.seq[i] = l
	}
	v := len(m.pieces)
	n := len(m.seq)
	big := make(map[uint64]int32)
	tri3 := make(map[[3]int32]int32)
	for i := range n {
		a, b, c := m.seq[i], m.seq[(i+1)%n], m.seq[(i+2)%n]
		big[pair(a, b)]++
		tri3[[3]int32{a, b, c}]++
	}

	type ent struct{ next, count int32 }
	succ := make([][]ent, v)
	for k, c := range big {
		a, b := int32(k>>32), int32(uint32(k))
		succ[a] = append(succ[a], ent{b, c})
	}
	byCount := func(x, y ent) int {
		if x.count != y.count {
			return int(y.count - x.count)
		}
		return int(x.next - y.next)
	}
	m.bigStart = make([]int32, v+1)
	m.bigTotal = make([]float64, v)
	pos := make(map[uint64]int32, len(big))
	for b := range v {
		slices.SortFunc(succ[b], byCount)
		m.bigStart[b] = int32(len(m.bigNext))
		total := 0
		for _, e := range succ[b] {
			pos[pair(int32(b), e.next)] = int32(len(m.bigNext))
			m.bigNext = append(m.bigNext, e.next)
			m.bigCount = append(m.bigCount, e.count)
			total += int(e.count)
		}
		m.bigTotal[b] = float64(total)
		m.maxBranch = max(m.maxBranch, len(succ[b]))
	}
	m.bigStart[v] = int32(len(m.bigNext))

	triSucc := make(map[uint64][]ent)
	for k, c := range tri3 {
		p := pair(k[0], k[1])
		triSucc[p] = append(triSucc[p], ent{k[2], c})
	}
	keys := make([]uint64, 0, len(triSucc))
	for k := range triSucc {
		keys = append(keys, k)
	}
	slices.Sort(keys) // map order is random; the tables must not be
	for _, k := range keys {
		es := triSucc[k]
		slices.SortFunc(es, byCount)
		r := int32(len(m.triStart))
		m.tri[k] = r
		m.triStart = append(m.triStart, int32(len(m.triPos)))
		total := 0
		b := int32(uint32(k))
		for _, e := range es {
			m.triPos = append(m.triPos, pos[pair(b, e.next)])
			m.triCount = append(m.triCount, e.count)
			total += int(e.count)
		}
		m.triTotal = append(m.triTotal, float64(total))
	}
	m.triStart = append(m.triStart, int32(len(m.triPos)))

	m.indexSentences()
	return m, nil
}

// indexSentences records where sentences start (after a token ending in
// . ! ? or a line break) and which sentences mention each word.
func (m *model) indexSentences() {
	m.wordSents = make(map[string][]int32)
	m.sentStart = append(m.sentStart, 0)
	for i := 1; i < len(m.seq); i++ {
		prev := m.pieces[m.seq[i-1]]
		t := strings.TrimRight(prev, " \t")
		if strings.Contains(prev, "\n") || strings.HasSuffix(t, ".") || strings.HasSuffix(t, "!") || strings.HasSuffix(t, "?") {
			if strings.TrimSpace(m.pieces[m.seq[i]]) != "" {
				m.sentStart = append(m.sentStart, int32(i))
			}
		}
	}
	for s, start := range m.sentStart {
		end := int32(len(m.seq))
		if s+1 < len(m.sentStart) {
			end = m.sentStart[s+1]
		}
		var sb strings.Builder
		for i := start; i < end; i++ {
			sb.WriteString(m.pieces[m.seq[i]])
		}
		forWords(sb.String(), 3, false, func(w string) {
			l := m.wordSents[w]
			if len(l) == 0 || l[len(l)-1] != int32(s) {
				m.wordSents[w] = append(l, int32(s))
			}
		})
	}
}

// forWords calls fn with each word of text (a run of at least minLen letters,
// or letters and digits when digits is set), lowercased and with a crude
// plural fold, so "Lighthouses" and "lighthouse" meet.
func forWords(text string, minLen int, digits bool, fn func(string)) {
	var buf []byte
	flush := func() {
		if len(buf) > 0 && utf8.RuneCount(buf) >= minLen {
			w := string(buf)
			switch {
			case strings.HasSuffix(w, "ies") && len(w) > 4:
				w = w[:len(w)-3] + "y"
			case strings.HasSuffix(w, "oes") && len(w) > 4:
				w = w[:len(w)-2]
			case strings.HasSuffix(w, "s") && !strings.HasSuffix(w, "ss") && len(w) > 3:
				w = w[:len(w)-1]
			}
			fn(w)
		}
		buf = buf[:0]
	}
	for _, r := range text {
		if unicode.IsLetter(r) || digits && unicode.IsDigit(r) {
			buf = utf8.AppendRune(buf, unicode.ToLower(r))
			continue
		}
		flush()
	}
	flush()
}

// idf is the inverse document frequency of a word over the corpus's
// sentences: words in most sentences ("the") weigh little, words the corpus
// rarely or never uses weigh most.
func (m *model) idf(w string) float64 {
	s := float64(len(m.sentStart))
	return math.Log((s+1)/float64(len(m.wordSents[w])+1)) + 0.3
}

// isInstructionWord reports words of the request itself ("tell me
// about…"), not of its topic; they never choose where a reply starts.
func isInstructionWord(w string) bool {
	switch w {
	case "tell", "explain", "describe", "about", "what", "how", "why", "please", "give",
		"show", "write", "can", "could", "would", "you", "the", "and", "does":
		return true
	}
	return false
}

// topicWindowBytes is how much of the end of the steering text is searched
// for a topic word.
const topicWindowBytes = 2048

// topicSentences returns the sentences about the rarest corpus word in the
// end of text (later words win ties, since the end of a prompt is usually
// its point), or nil when the corpus knows none of its words.
func (m *model) topicSentences(text string) []int32 {
	if len(text) > topicWindowBytes {
		text = text[len(text)-topicWindowBytes:]
	}
	var best []int32
	forWords(text, 3, false, func(w string) {
		if isInstructionWord(w) {
			return
		}
		if l, ok := m.wordSents[w]; ok && (best == nil || len(l) <= len(best)) {
			best = l
		}
	})
	return best
}

// scores fills s with the interpolated probabilities of b's successors given
// the context (a, b) and returns the offset of b's successor list in the
// bigram arrays and its length. a < 0 means no trigram context.
func (m *model) scores(a, b int32, s []float64) (lo int32, n int) {
	lo, hi := m.bigStart[b], m.bigStart[b+1]
	n = int(hi - lo)
	inv := 1 / m.bigTotal[b]
	r, ok := int32(0), false
	if a >= 0 {
		r, ok = m.tri[pair(a, b)]
	}
	if !ok {
		for j := range n {
			s[j] = float64(m.bigCount[lo+int32(j)]) * inv
		}
		return lo, n
	}
	bw := (1 - triWeight) * inv
	for j := range n {
		s[j] = float64(m.bigCount[lo+int32(j)]) * bw
	}
	tw := triWeight / m.triTotal[r]
	for k := m.triStart[r]; k < m.triStart[r+1]; k++ {
		s[m.triPos[k]-lo] += float64(m.triCount[k]) * tw
	}
	return lo, n
}

// rng is splitmix64: tiny, fast, and fixed forever, so a seed gives the same
// text on every Go release (math/rand makes no such promise).
type rng struct{ s uint64 }

func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	return mix64(r.s)
}

// float returns a uniform value in [0, 1).
func (r *rng) float() float64 { return float64(r.next()>>11) * (1.0 / (1 << 53)) }

// fnv64 hashes bytes (FNV-1a); used to derive seeds and prompt hashes.
func fnv64(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= 0x100000001b3
	}
	return h
}

const fnvOffset = 0xcbf29ce484222325

// sampler holds one choice's decoding state.
type sampler struct {
	m          *model
	a, b       int32
	forced     []int32 // tokens emitted before sampling starts
	r          rng
	temp, topP float64
	freqPen    float64
	presPen    float64
	counts     []uint16 // generated count per local id, only with penalties
	hist       []int32  // tokens of this choice, for the repeat block
}

// repeatWindow is how far back the repeat block looks. A 4-gram that already
// occurred in the window is not produced again (like no_repeat_ngram_size=4
// in other decoders): a trigram model over a small corpus otherwise falls
// into short loops, especially when greedy.
const repeatWindow = 1024

// scratch is per-request working memory for sampling.
type scratch struct {
	s   []float64
	idx []int32
}

func newScratch(m *model) *scratch {
	return &scratch{s: make([]float64, m.maxBranch), idx: make([]int32, m.maxBranch)}
}

// next picks the next local token id and advances the context.
func (g *sampler) next(sc *scratch) int32 {
	var tok int32
	if len(g.forced) > 0 {
		tok, g.forced = g.forced[0], g.forced[1:]
	} else {
		tok = g.sample(sc)
	}
	g.a, g.b = g.b, tok
	g.hist = append(g.hist, tok)
	if g.counts != nil && g.counts[tok] < math.MaxUint16 {
		g.counts[tok]++
	}
	return tok
}

// blockRepeats zeroes the score of every successor that would repeat a
// 4-gram of the recent history, unless that would leave nothing to pick.
func (g *sampler) blockRepeats(lo int32, s []float64) {
	h := g.hist
	n := len(h)
	if n < 4 {
		return
	}
	x, y, z := h[n-3], h[n-2], h[n-1]
	blocked := 0
	for i := max(0, n-repeatWindow); i+3 < n; i++ {
		if h[i] != x || h[i+1] != y || h[i+2] != z {
			continue
		}
		next := h[i+3]
		for j := range s {
			if g.m.bigNext[lo+int32(j)] == next && s[j] != 0 {
				s[j] = 0
				blocked++
			}
		}
	}
	if blocked == 0 {
		return
	}
	for j := range s {
		if s[j] != 0 {
			return
		}
	}
	g.m.scores(g.a, g.b, s) // everything was blocked: allow the repeat
}

func (g *sampler) sample(sc *scratch) int32 {
	m := g.m
	lo, n := m.scores(g.a, g.b, sc.s)
	s := sc.s[:n]
	g.blockRepeats(lo, s)
	if g.counts != nil {
		// OpenAI's penalties subtract from logits; our logits are log s.
		for j := range s {
			if c := g.counts[m.bigNext[lo+int32(j)]]; c > 0 {
				s[j] *= math.Exp(-(g.freqPen*float64(c) + g.presPen))
			}
		}
	}
	best := 0
	for j := 1; j < n; j++ {
		if s[j] > s[best] {
			best = j
		}
	}
	if g.temp == 0 || n == 1 || !(s[best] > 0) || math.IsInf(s[best], 0) {
		return m.bigNext[lo+int32(best)]
	}
	// Tempering relative to the maximum keeps the weights in (0, 1] so a low
	// temperature cannot underflow every weight to zero.
	inv, invT := 1/s[best], 1/g.temp
	total := 0.0
	// Successors are sorted by bigram count, so equal scores come in runs;
	// reusing the last result skips most of the (costly) exponentials.
	lastIn, lastOut := -1.0, 0.0
	for j := range s {
		w := s[j] * inv
		if g.temp != 1 {
			if w != lastIn {
				lastIn, lastOut = w, math.Exp(math.Log(w)*invT) // math.Pow, at half the cost
			}
			w = lastOut
		}
		s[j] = w
		total += w
	}
	if g.topP < 1 {
		idx := sc.idx[:n]
		for j := range idx {
			idx[j] = int32(j)
		}
		slices.SortStableFunc(idx, func(x, y int32) int {
			switch {
			case s[x] > s[y]:
				return -1
			case s[x] < s[y]:
				return 1
			}
			return 0
		})
		cut, acc, k := g.topP*total, 0.0, 0
		for k < n {
			acc += s[idx[k]]
			k++
			if acc >= cut {
				break
			}
		}
		u := g.r.float() * acc
		for _, j := range idx[:k] {
			u -= s[j]
			if u < 0 {
				return m.bigNext[lo+j]
			}
		}
		return m.bigNext[lo+idx[k-1]]
	}
	u := g.r.float() * total
	for j := range s {
		u -= s[j]
		if u < 0 {
			return m.bigNext[lo+int32(j)]
		}
	}
	return m.bigNext[lo+int32(best)]
}
