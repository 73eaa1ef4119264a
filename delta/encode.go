package delta

// blockSize is the width of the hashed windows: source blocks are indexed
// at multiples of blockSize and the target is scanned byte by byte with a
// rolling hash, as Fossil's own encoder does.
const blockSize = 16

// maxTries bounds the candidates examined per target position, so that
// repetitive input stays linear.
const maxTries = 64

// Encode appends to dst a Fossil delta that turns source into target. It
// allocates only the block index (one slice of len(source)/16 entries) and
// what dst needs to grow. A target shorter than a block, or one with
// nothing in common with the source, becomes a single insert.
func Encode(dst, source, target []byte) []byte {
	dst = appendInt(dst, uint32(len(target)))
	dst = append(dst, '\n')
	nBlocks := len(source) / blockSize
	if len(target) < blockSize || nBlocks == 0 {
		return finish(dst, target, 0, target)
	}
	// Hash table of source blocks: buckets heads and chains, both indices
	// into the block list, -1 terminated.
	tableSize := 1
	for tableSize < nBlocks {
		tableSize <<= 1
	}
	mask := uint32(tableSize - 1)
	index := make([]int32, tableSize+nBlocks)
	heads, chain := index[:tableSize], index[tableSize:]
	for i := range heads {
		heads[i] = -1
	}
	for b := 0; b < nBlocks; b++ {
		h := newRolling(source[b*blockSize:]).value() & mask
		chain[b] = heads[h]
		heads[h] = int32(b)
	}

	literalStart := 0 // start of target bytes not yet emitted
	pos := 0          // window start in target
	r := newRolling(target)
	for pos+blockSize <= len(target) {
		bestLen, bestSrc, bestTgt := 0, 0, 0
		tries := 0
		for b := heads[r.value()&mask]; b >= 0 && tries < maxTries; b = chain[b] {
			tries++
			s := int(b) * blockSize
			// Extend forward, then backward into the pending literal.
			f := 0
			for s+f < len(source) && pos+f < len(target) && source[s+f] == target[pos+f] {
				f++
			}
			if f < blockSize {
				continue
			}
			k := 0
			for k < s && pos-k > literalStart && source[s-k-1] == target[pos-k-1] {
				k++
			}
			if f+k > bestLen {
				bestLen, bestSrc, bestTgt = f+k, s-k, pos-k
			}
		}
		// A copy command costs up to ~12 bytes; take it only if it pays.
		if bestLen >= blockSize {
			if bestTgt > literalStart {
				dst = appendInsert(dst, target[literalStart:bestTgt])
			}
			dst = appendCopy(dst, bestLen, bestSrc)
			pos = bestTgt + bestLen
			literalStart = pos
			// Small edits (a price's digits, a sequence number) leave the
			// source and target aligned again a few bytes later: resync
			// there instead of rescanning for a block-aligned match.
			srcEnd := bestSrc + bestLen
			for {
				k, shift, m := resync(source, target, srcEnd, pos)
				if m == 0 {
					break
				}
				dst = appendInsert(dst, target[pos:pos+k])
				dst = appendCopy(dst, m, srcEnd+k+shift)
				srcEnd += k + shift + m
				pos += k + m
				literalStart = pos
			}
			if pos+blockSize <= len(target) {
				r = newRolling(target[pos:])
			}
			continue
		}
		if pos+blockSize >= len(target) {
			break
		}
		r.roll(target[pos], target[pos+blockSize])
		pos++
	}
	return finish(dst, target, literalStart, target)
}

func appendCopy(dst []byte, n, offset int) []byte {
	dst = appendInt(dst, uint32(n))
	dst = append(dst, '@')
	dst = appendInt(dst, uint32(offset))
	return append(dst, ',')
}

// Resync limits: literal bytes tried after a copy ends, source shifts tried
// (for edits that change the length), and the shortest copy worth emitting.
const (
	maxResyncLiteral = 8
	maxResyncShift   = 2
	minResyncCopy    = 8
)

// resync looks for target[t+k:] matching source[s+k+shift:] for small k
// and shift. It returns the smallest literal k with the longest match m
// (m = 0 when none is long enough).
func resync(source, target []byte, s, t int) (k, shift, m int) {
	for kk := 0; kk <= maxResyncLiteral && t+kk < len(target); kk++ {
		bestM, bestShift := 0, 0
		for sh := -maxResyncShift; sh <= maxResyncShift; sh++ {
			if kk == 0 && sh <= 0 {
				continue // nothing skipped: the copy would have gone on
			}
			so := s + kk + sh
			if so < 0 || so >= len(source) {
				continue
			}
			n := 0
			for so+n < len(source) && t+kk+n < len(target) && source[so+n] == target[t+kk+n] {
				n++
			}
			if n > bestM {
				bestM, bestShift = n, sh
			}
		}
		if bestM >= minResyncCopy {
			return kk, bestShift, bestM
		}
	}
	return 0, 0, 0
}

func appendInsert(dst, lit []byte) []byte {
	dst = appendInt(dst, uint32(len(lit)))
	dst = append(dst, ':')
	return append(dst, lit...)
}

// finish inserts target[from:] and appends the checksum.
func finish(dst, target []byte, from int, full []byte) []byte {
	if from < len(target) {
		dst = appendInsert(dst, target[from:])
	}
	dst = appendInt(dst, checksum(full))
	return append(dst, ';')
}

// rolling is an Adler-style rolling hash over a blockSize window.
type rolling struct{ a, b uint16 }

func newRolling(w []byte) rolling {
	var r rolling
	for i := 0; i < blockSize; i++ {
		r.a += uint16(w[i])
		r.b += uint16(blockSize-i) * uint16(w[i])
	}
	return r
}

// roll drops out and takes in.
func (r *rolling) roll(out, in byte) {
	r.a += uint16(in) - uint16(out)
	r.b += r.a - blockSize*uint16(out)
}

func (r rolling) value() uint32 { return uint32(r.a) | uint32(r.b)<<16 }
