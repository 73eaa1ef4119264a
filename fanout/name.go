package fanout

import (
	"errors"
	"fmt"
)

// ErrInvalidChannel is wrapped by every channel-name validation error.
var ErrInvalidChannel = errors.New("fanout: invalid channel name")

// DefaultMaxNameLength is the longest channel name accepted when
// Config.MaxNameLength is zero.
const DefaultMaxNameLength = 255

// ValidateName reports whether name is a valid channel name: 1 to maxLen
// bytes, segments separated by ':', every segment non-empty and made of
// ASCII letters, digits and the characters "_-.@#=+,". Wildcards ('*', '>')
// and whitespace are never part of a channel name.
func ValidateName(name string, maxLen int) error {
	if maxLen <= 0 {
		maxLen = DefaultMaxNameLength
	}
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidChannel)
	}
	if len(name) > maxLen {
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidChannel, len(name), maxLen)
	}
	segStart := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == ':' {
			if i == segStart {
				return fmt.Errorf("%w: empty segment at byte %d", ErrInvalidChannel, i)
			}
			segStart = i + 1
			continue
		}
		if !nameChar[c] {
			return fmt.Errorf("%w: character %q at byte %d not allowed", ErrInvalidChannel, c, i)
		}
	}
	if segStart == len(name) {
		return fmt.Errorf("%w: empty last segment", ErrInvalidChannel)
	}
	return nil
}

var nameChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-.@#=+," {
		t[c] = true
	}
	return t
}()
