package batch

// CRC32C combination: crc(A‖B) from crc(A), crc(B) and len(B), without
// reading A or B again (zlib's crc32_combine, with the Castagnoli
// polynomial). It lets klink read a batch's records section once to both
// check the source CRC and compute the rewritten header's CRC.

const castagnoliReversed = 0x82f63b78

// multModP multiplies a and b modulo the CRC polynomial (bit-reversed
// representation, x^0 in the top bit).
func multModP(a, b uint32) uint32 {
	m := uint32(1) << 31
	var p uint32
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ castagnoliReversed
		} else {
			b >>= 1
		}
	}
}

// x2nTable[k] is x^(2^k) modulo the polynomial.
var x2nTable = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < 32; k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// x2nModP is x^(n·2^k) modulo the polynomial.
func x2nModP(n int64, k uint) uint32 {
	p := uint32(1) << 31 // x^0
	for n != 0 {
		if n&1 != 0 {
			p = multModP(x2nTable[k&31], p)
		}
		n >>= 1
		k++
	}
	return p
}

// crcCombine returns the CRC32C of A‖B given crc1 = CRC32C(A), crc2 =
// CRC32C(B) and len2 = len(B).
func crcCombine(crc1, crc2 uint32, len2 int64) uint32 {
	return multModP(x2nModP(len2, 3), crc1) ^ crc2
}
