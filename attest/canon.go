package attest

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("decoding base64url: %w: %w", ErrMalformed, errLineBreak)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decoding base64url: %w: %w", ErrMalformed, err)
	}
	return b, nil
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
