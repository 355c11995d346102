package attest

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// The canonical encoding of every signed or hashed teegate object is the
// JSON Canonicalization Scheme (RFC 8785) restricted to the value types our
// schemas use: objects, arrays, strings, booleans and integers in
// [0, 2^53-1]. No floats and no null appear; optional members are omitted
// when empty. Keys are written in sorted order by hand in each encoder below
// (all keys are lowercase ASCII, so byte order equals the UTF-16 order RFC
// 8785 asks for); a test re-sorts a generic decoding to prove it.

// appendJSONString appends s as an RFC 8785 string: only '"', '\\' and
// control characters are escaped, using the short forms \b \t \n \f \r where
// they exist and \u00xx (lowercase hex) otherwise. Everything else is written
// as its UTF-8 bytes. Invalid UTF-8 is written as U+FFFD so the output is
// always valid JSON; decoders reject such input because it does not
// re-encode to itself.
func appendJSONString(dst []byte, s string) []byte {
	const hexdig = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"':
				dst = append(dst, '\\', '"')
			case '\\':
				dst = append(dst, '\\', '\\')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexdig[c>>4], hexdig[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\uFFFD"...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendJSONUint appends a non-negative integer.
func appendJSONUint(dst []byte, v uint64) []byte {
	return strconv.AppendUint(dst, v, 10)
}

// appendJSONBool appends true or false.
func appendJSONBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}

// appendB64 appends b as a JSON string holding base64url without padding
// (RFC 4648 §5).
func appendB64(dst, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.RawURLEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// errLineBreak: CR or LF inside base64url (wrapped with ErrMalformed).
var errLineBreak = errors.New("line break in base64url")

// DecodeBase64URL decodes base64url without padding as docs/attestation.md
// §1 asks: it rejects padding, characters outside the alphabet and non-zero
// trailing bits. Go's decoders, even Strict ones, skip CR and LF; they are
// rejected here too, so one value has exactly one accepted spelling.
func DecodeBase64URL(s string) ([]byte, error) {
	// Two IndexByte scans (vectorized) rather than ContainsAny, which walks
	// the string a byte at a time: a receipt header is ~700 characters.
	if strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0 {
		return nil, fmt.Errorf("decoding base64url: %w: %w", ErrMalformed, errLineBreak)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decoding base64url: %w: %w", ErrMalformed, err)
	}
	return b, nil
}

// decodeBase64URLString is DecodeBase64URL returning a string. It decodes
// in chunks through a stack buffer into the string's own memory, one
// allocation in all: the receipt decoder keeps substrings of the result,
// and a receipt header is decoded on every answer.
func decodeBase64URLString(s string) (string, error) {
	if strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0 {
		return "", fmt.Errorf("decoding base64url: %w: %w", ErrMalformed, errLineBreak)
	}
	enc := base64.RawURLEncoding.Strict()
	// 1024 characters are whole 4-character quanta, 768 bytes decoded;
	// only the last chunk may end in a partial quantum, as the whole
	// input would.
	const chunk = 1024
	var buf [chunk / 4 * 3]byte
	var sb strings.Builder
	sb.Grow(enc.DecodedLen(len(s)))
	for len(s) > 0 {
		c := s[:min(len(s), chunk)]
		n, err := enc.Decode(buf[:], []byte(c))
		if err != nil {
			return "", fmt.Errorf("decoding base64url: %w: %w", ErrMalformed, err)
		}
		sb.Write(buf[:n])
		s = s[len(c):]
	}
	return sb.String(), nil
}

// decodeSignature decodes a base64url Ed25519 signature into dst and
// returns its decoded length, which the caller checks: a value that is
// valid base64url of another length is reported after the receipt's own
// errors, as before. Only a value that decodes to at most 64 bytes is
// decoded into dst.
func decodeSignature(s string, dst *[64]byte) (int, error) {
	if strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0 {
		return 0, fmt.Errorf("decoding base64url: %w: %w", ErrMalformed, errLineBreak)
	}
	enc := base64.RawURLEncoding.Strict()
	if enc.DecodedLen(len(s)) > len(dst) {
		b, err := DecodeBase64URL(s)
		return len(b), err
	}
	n, err := enc.Decode(dst[:], []byte(s))
	if err != nil {
		return 0, fmt.Errorf("decoding base64url: %w: %w", ErrMalformed, err)
	}
	return n, nil
}

// appendHex appends b as a JSON string of lowercase hex.
func appendHex(dst, b []byte) []byte {
	dst = append(dst, '"')
	dst = hex.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendKey appends "key": preceded by a comma unless first.
func appendKey(dst []byte, key string, first bool) []byte {
	if !first {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	return append(dst, '"', ':')
}

// errJSON: input that is not JSON, or not the restricted JSON of §1 (null,
// a sign, fraction or exponent, invalid UTF-8, a lone surrogate). Always
// wrapped with ErrMalformed.
var errJSON = errors.New("invalid JSON")

// jsonReader decodes the restricted JSON of docs/attestation.md §1 from a
// string, for the receipt envelope: a client decodes one per answer, and
// encoding/json (reflection, a Decoder that buffers and scans the input
// twice) took about a quarter of the time of the Ed25519 check beside it.
// It accepts any JSON whitespace and escapes (the receipt decoder does not
// demand canonical form) but no null, no number other than plain digits,
// and only valid UTF-8 in strings. Strings without escapes are returned as
// substrings of s, without copying.
type jsonReader struct {
	s string
	i int
}

func (d *jsonReader) skipSpace() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// consume skips whitespace and consumes c if it is next.
func (d *jsonReader) consume(c byte) bool {
	d.skipSpace()
	if d.i < len(d.s) && d.s[d.i] == c {
		d.i++
		return true
	}
	return false
}

// syntaxError reports what was expected at the current offset.
func (d *jsonReader) syntaxError(want string) error {
	return fmt.Errorf("%w: %w: %s expected at offset %d", ErrMalformed, errJSON, want, d.i)
}

// openObject consumes the '{' of an object.
func (d *jsonReader) openObject() error {
	if !d.consume('{') {
		return d.syntaxError("object")
	}
	return nil
}

// member reads the key and colon of the next member of an object whose n
// members were read already, or the closing brace (more false).
func (d *jsonReader) member(n int) (key string, more bool, err error) {
	if d.consume('}') {
		return "", false, nil
	}
	if n > 0 && !d.consume(',') {
		return "", false, d.syntaxError("',' or '}'")
	}
	if key, err = d.str(); err != nil {
		return "", false, err
	}
	if !d.consume(':') {
		return "", false, d.syntaxError("':'")
	}
	return key, true, nil
}

// object reads one object whose members read reads: it returns the
// member's bit after reading its value, or 0, having read nothing, for a
// member the format does not have. Unknown and repeated members are
// ErrMalformed (what names the object in the message: "", "usage "…).
func (d *jsonReader) object(seen *uint32, what string, read func(key string) (uint32, error)) error {
	if err := d.openObject(); err != nil {
		return err
	}
	for n := 0; ; n++ {
		key, more, err := d.member(n)
		if err != nil || !more {
			return err
		}
		bit, err := read(key)
		if bit == 0 {
			return fmt.Errorf("unknown %smember at offset %d: %w", what, d.i, ErrMalformed)
		}
		if err != nil {
			return err
		}
		if *seen&bit != 0 {
			return fmt.Errorf("repeated %smember at offset %d: %w", what, d.i, ErrMalformed)
		}
		*seen |= bit
	}
}

// end checks that only whitespace follows.
func (d *jsonReader) end() error {
	d.skipSpace()
	if d.i != len(d.s) {
		return fmt.Errorf("trailing data: %w", ErrMalformed)
	}
	return nil
}

// str reads a string value.
func (d *jsonReader) str() (string, error) {
	if !d.consume('"') {
		return "", d.syntaxError("string")
	}
	start := d.i
	// Fast path: the members of a receipt are short ASCII strings without
	// escapes, found by vectorized byte search and checked 8 bytes at a time.
	if q := strings.IndexByte(d.s[start:], '"'); q >= 0 {
		v := d.s[start : start+q]
		if strings.IndexByte(v, '\\') < 0 && printableASCII(v) {
			d.i = start + q + 1
			return v, nil
		}
	}
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			return d.s[start : d.i-1], nil
		case c == '\\':
			return d.strEscaped(start)
		case c < 0x20:
			return "", d.syntaxError("string character")
		case c < utf8.RuneSelf:
			d.i++
		default:
			r, size := utf8.DecodeRuneInString(d.s[d.i:])
			if r == utf8.RuneError && size == 1 {
				return "", d.syntaxError("UTF-8")
			}
			d.i += size
		}
	}
	return "", d.syntaxError("closing quote")
}

// printableASCII reports whether s has only bytes 0x20-0x7f.
func printableASCII(s string) bool {
	const ones, highs = 0x2020202020202020, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		// A byte under 0x20 borrows in x-ones and sets its own top bit
		// there (the lowest such byte always does); a byte of 0x80 or
		// more has its top bit set in x.
		if ((x-ones)|x)&highs != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// strEscaped finishes a string that has escapes, from its first backslash;
// start is the offset after the opening quote.
func (d *jsonReader) strEscaped(start int) (string, error) {
	buf := make([]byte, 0, 2*(d.i-start)+16)
	buf = append(buf, d.s[start:d.i]...)
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			return string(buf), nil
		case c == '\\':
			if d.i+1 >= len(d.s) {
				return "", d.syntaxError("escape")
			}
			e := d.s[d.i+1]
			d.i += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return "", d.syntaxError("\\u escape")
				}
				if utf16.IsSurrogate(r) {
					// Only a high surrogate followed by an escaped low
					// one is a character; anything else would not be
					// valid UTF-8 once decoded.
					var lo rune
					if r < 0xdc00 && strings.HasPrefix(d.s[d.i:], `\u`) {
						d.i += 2
						lo, ok = d.hex4()
					}
					r = utf16.DecodeRune(r, lo)
					if !ok || r == utf8.RuneError {
						return "", d.syntaxError("surrogate pair")
					}
				}
				buf = utf8.AppendRune(buf, r)
			default:
				return "", d.syntaxError("escape")
			}
		case c < 0x20:
			return "", d.syntaxError("string character")
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			d.i++
		default:
			r, size := utf8.DecodeRuneInString(d.s[d.i:])
			if r == utf8.RuneError && size == 1 {
				return "", d.syntaxError("UTF-8")
			}
			buf = append(buf, d.s[d.i:d.i+size]...)
			d.i += size
		}
	}
	return "", d.syntaxError("closing quote")
}

// hex4 reads the four hex digits of a \u escape.
func (d *jsonReader) hex4() (rune, bool) {
	if d.i+4 > len(d.s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(d.s[d.i : d.i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	d.i += 4
	return r, true
}

// uint reads an integer written as digits only (§1: no sign, fraction or
// exponent, no leading zero) and at most max.
func (d *jsonReader) uint(max uint64) (uint64, error) {
	d.skipSpace()
	start := d.i
	var v uint64
	for d.i < len(d.s) && d.s[d.i] >= '0' && d.s[d.i] <= '9' {
		digit := uint64(d.s[d.i] - '0')
		if v > (max-digit)/10 {
			return 0, fmt.Errorf("integer over %d: %w", max, ErrMalformed)
		}
		v = v*10 + digit
		d.i++
	}
	switch {
	case d.i == start:
		return 0, d.syntaxError("integer")
	case d.s[start] == '0' && d.i-start > 1:
		return 0, d.syntaxError("integer without leading zero")
	case d.i < len(d.s) && (d.s[d.i] == '.' || d.s[d.i] == 'e' || d.s[d.i] == 'E'):
		return 0, d.syntaxError("integer without fraction or exponent")
	}
	return v, nil
}

// bool reads true or false.
func (d *jsonReader) bool() (bool, error) {
	d.skipSpace()
	switch {
	case strings.HasPrefix(d.s[d.i:], "true"):
		d.i += 4
		return true, nil
	case strings.HasPrefix(d.s[d.i:], "false"):
		d.i += 5
		return false, nil
	}
	return false, d.syntaxError("boolean")
}

// errTime: a time not in the §1 format (wrapped with ErrMalformed).
var errTime = errors.New("time not in YYYY-MM-DDTHH:MM:SSZ form")

// parseTime reads a time as §1 writes it: exactly TimeLayout's 20
// characters, UTC. time.Parse(TimeLayout, s) also takes a one-digit hour
// and a fractional second; the latter would put nanoseconds the signature
// does not cover (the canonical form drops them) into a verified receipt.
func parseTime(s string) (time.Time, error) {
	if len(s) != len(TimeLayout) || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
		s[13] != ':' || s[16] != ':' || s[19] != 'Z' {
		return time.Time{}, fmt.Errorf("%w: %w", ErrMalformed, errTime)
	}
	year := digits(s[0:4])
	month, day := digits(s[5:7]), digits(s[8:10])
	hour, minute, sec := digits(s[11:13]), digits(s[14:16]), digits(s[17:19])
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return time.Time{}, fmt.Errorf("%w: %w", ErrMalformed, errTime)
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC), nil
}

// digits is the value of a string of decimal digits, or -1.
func digits(s string) int {
	v := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return -1
		}
		v = v*10 + int(c-'0')
	}
	return v
}

// daysIn is the number of days of a month (1-12) in the proleptic
// Gregorian calendar, as time.Parse checks it.
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// appendTime appends t in UTC as TimeLayout formats it. Years of four
// digits, the only ones a valid receipt holds, are written directly:
// Time.AppendFormat interprets its layout on every call and cost as much
// as the rest of the canonical encoding.
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, TimeLayout)
	}
	hour, minute, sec := t.Clock()
	dst = append(dst, byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-')
	dst = append2(dst, int(month), '-')
	dst = append2(dst, day, 'T')
	dst = append2(dst, hour, ':')
	dst = append2(dst, minute, ':')
	return append2(dst, sec, 'Z')
}

// append2 appends a two-digit number and a separator.
func append2(dst []byte, v int, sep byte) []byte {
	return append(dst, byte('0'+v/10), byte('0'+v%10), sep)
}
