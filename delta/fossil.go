package delta

import (
	"errors"
	"fmt"
)

// The Fossil delta format:
//
//	<target length>\n
//	<count>@<offset>,   copy count bytes from source[offset:]
//	<count>:<bytes>     insert count literal bytes
//	<checksum>;         end; checksum of the target
//
// Integers are written in a base-64 alphabet, most significant digit first.

const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"

var digitValue = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(digits); i++ {
		t[digits[i]] = int8(i)
	}
	return t
}()

func appendInt(dst []byte, v uint32) []byte {
	var buf [6]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[v&63]
		v >>= 6
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

// ErrCorrupt wraps every error Decode returns for a malformed patch.
var ErrCorrupt = errors.New("delta: corrupt fossil delta")

func readInt(p []byte) (v uint32, rest []byte, err error) {
	n := 0
	for ; n < len(p); n++ {
		d := digitValue[p[n]]
		if d < 0 {
			break
		}
		if v > (1<<32-1)>>6 {
			return 0, nil, fmt.Errorf("%w: integer overflow", ErrCorrupt)
		}
		v = v<<6 | uint32(d)
	}
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: integer expected", ErrCorrupt)
	}
	return v, p[n:], nil
}

// checksum is Fossil's 32-bit checksum of a target.
func checksum(z []byte) uint32 {
	var s0, s1, s2, s3 uint32
	for len(z) >= 16 {
		s0 += uint32(z[0]) + uint32(z[4]) + uint32(z[8]) + uint32(z[12])
		s1 += uint32(z[1]) + uint32(z[5]) + uint32(z[9]) + uint32(z[13])
		s2 += uint32(z[2]) + uint32(z[6]) + uint32(z[10]) + uint32(z[14])
		s3 += uint32(z[3]) + uint32(z[7]) + uint32(z[11]) + uint32(z[15])
		z = z[16:]
	}
	for len(z) >= 4 {
		s0 += uint32(z[0])
		s1 += uint32(z[1])
		s2 += uint32(z[2])
		s3 += uint32(z[3])
		z = z[4:]
	}
	s3 += s2<<8 + s1<<16 + s0<<24
	switch len(z) {
	case 3:
		s3 += uint32(z[2]) << 8
		fallthrough
	case 2:
		s3 += uint32(z[1]) << 16
		fallthrough
	case 1:
		s3 += uint32(z[0]) << 24
	}
	return s3
}

// MaxTarget bounds the target size Decode accepts (and Encode produces).
const MaxTarget = 1 << 30

// Decode applies patch to source and appends the target to dst. It checks
// every command against the source and the declared length, and the final
// checksum; a malformed patch yields an error wrapping ErrCorrupt.
func Decode(dst, source, patch []byte) ([]byte, error) {
	size, p, err := readInt(patch)
	if err != nil {
		return dst, err
	}
	if len(p) == 0 || p[0] != '\n' {
		return dst, fmt.Errorf("%w: no newline after the length", ErrCorrupt)
	}
	if size > MaxTarget {
		return dst, fmt.Errorf("%w: target of %d bytes", ErrCorrupt, size)
	}
	p = p[1:]
	start := len(dst)
	dst = growTo(dst, int(size))
	for len(p) > 0 {
		var n uint32
		if n, p, err = readInt(p); err != nil {
			return dst[:start], err
		}
		if len(p) == 0 {
			return dst[:start], fmt.Errorf("%w: command expected", ErrCorrupt)
		}
		op := p[0]
		p = p[1:]
		written := len(dst) - start
		switch op {
		case '@':
			var off uint32
			if off, p, err = readInt(p); err != nil {
				return dst[:start], err
			}
			if len(p) == 0 || p[0] != ',' {
				return dst[:start], fmt.Errorf("%w: copy without ','", ErrCorrupt)
			}
			p = p[1:]
			if uint64(off)+uint64(n) > uint64(len(source)) || uint64(written)+uint64(n) > uint64(size) {
				return dst[:start], fmt.Errorf("%w: copy out of range", ErrCorrupt)
			}
			dst = append(dst, source[off:off+n]...)
		case ':':
			if uint64(n) > uint64(len(p)) || uint64(written)+uint64(n) > uint64(size) {
				return dst[:start], fmt.Errorf("%w: insert out of range", ErrCorrupt)
			}
			dst = append(dst, p[:n]...)
			p = p[n:]
		case ';':
			if uint32(written) != size {
				return dst[:start], fmt.Errorf("%w: target is %d bytes, header says %d", ErrCorrupt, written, size)
			}
			if checksum(dst[start:]) != n {
				return dst[:start], fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
			}
			return dst, nil
		default:
			return dst[:start], fmt.Errorf("%w: unknown command %q", ErrCorrupt, op)
		}
	}
	return dst[:start], fmt.Errorf("%w: unterminated", ErrCorrupt)
}

func growTo(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		return nb
	}
	return b
}
