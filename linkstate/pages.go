package linkstate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// checkPages checks, on a bbolt file's bytes, what bbolt takes on trust
// when it reads them: that every page the current meta page reaches lies
// inside the file and is reached once, that every key and value lies inside
// its page, and that keys are in order. bbolt reads a damaged file through
// unchecked pointers: it panics, faults, loops, or reads memory that is not
// the file's. The layout is bbolt's (go.etcd.io/bbolt/internal/common), in
// the machine's byte order.
func checkPages(data []byte) error {
	le := binary.NativeEndian
	const (
		headerSize    = 16 // id u64, flags u16, count u16, overflow u32
		elementSize   = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
		bucketHdrSize = 16 // root pgid u64, sequence u64
		branchFlag    = 0x01
		leafFlag      = 0x02
		freelistFlag  = 0x10
		bucketLeaf    = 0x01
		magic         = 0xED0CDAED
		noFreelist    = ^uint64(0)
	)
	// The meta page at off, if it is valid.
	type meta struct{ pageSize, root, freelist, hwm, txid uint64 }
	readMeta := func(off int) (meta, bool) {
		if off+headerSize+64 > len(data) {
			return meta{}, false
		}
		m := data[off+headerSize : off+headerSize+64]
		h := fnv.New64a()
		h.Write(m[:56])
		if le.Uint32(m) != magic || le.Uint32(m[4:]) != 2 || le.Uint64(m[56:]) != h.Sum64() {
			return meta{}, false
		}
		return meta{uint64(le.Uint32(m[8:])), le.Uint64(m[16:]), le.Uint64(m[32:]), le.Uint64(m[40:]), le.Uint64(m[48:])}, true
	}
	// The page size and meta pages as bbolt finds them (DB.getPageSize,
	// DB.meta): the valid meta with the higher transaction id.
	m0, ok0 := readMeta(0)
	pageSize := m0.pageSize
	if !ok0 {
		for i := 0; i <= 14; i++ {
			if m1, ok := readMeta(1024 << i); ok {
				pageSize = m1.pageSize
				break
			}
		}
	}
	if pageSize < 1024 || pageSize > 1<<24 {
		return errors.New("no valid meta page")
	}
	m0, ok0 = readMeta(0)
	m1, ok1 := readMeta(int(pageSize))
	m := m0
	if !ok0 || ok1 && m1.txid > m0.txid {
		m = m1
	}
	if !ok0 && !ok1 {
		return errors.New("no valid meta page")
	}
	ps := int(pageSize)
	if m.hwm < 2 || m.hwm > uint64(len(data)/ps) {
		return fmt.Errorf("high water mark %d is outside the file's %d pages", m.hwm, len(data)/ps)
	}

	seen := make(map[uint64]bool)
	// page returns the bytes of page id and its overflow, checking it is
	// inside the file, has one of the flags and was not reached before.
	page := func(id uint64, flags uint16) ([]byte, error) {
		if id < 2 || id >= m.hwm {
			return nil, fmt.Errorf("page %d is outside 2..%d", id, m.hwm-1)
		}
		p := data[id*pageSize:]
		if got := le.Uint64(p); got != id {
			return nil, fmt.Errorf("page %d says it is page %d", id, got)
		}
		if f := le.Uint16(p[8:]); f&flags == 0 || f&^(branchFlag|leafFlag|freelistFlag) != 0 || f&(f-1) != 0 {
			return nil, fmt.Errorf("page %d has flags %#x", id, f)
		}
		span := 1 + uint64(le.Uint32(p[12:]))
		if span > m.hwm-id {
			return nil, fmt.Errorf("page %d overflows past the high water mark", id)
		}
		for i := id; i < id+span; i++ {
			if seen[i] {
				return nil, fmt.Errorf("page %d is reached twice", i)
			}
			seen[i] = true
		}
		return p[:span*pageSize], nil
	}

	// tree checks the page p (a page, or an inline bucket's page) and
	// what it reaches, and returns its first and last keys.
	var tree func(p []byte, depth int) (first, last []byte, err error)
	// bucket checks a bucket value.
	bucket := func(v []byte, depth int) error {
		if len(v) < bucketHdrSize {
			return errors.New("bucket value too short")
		}
		if root := le.Uint64(v); root != 0 {
			p, err := page(root, branchFlag|leafFlag)
			if err != nil {
				return err
			}
			_, _, err = tree(p, depth+1)
			return err
		}
		inline := v[bucketHdrSize:]
		if len(inline) < headerSize || le.Uint16(inline[8:]) != leafFlag {
			return errors.New("inline bucket is not a leaf page")
		}
		_, _, err := tree(inline, depth+1)
		return err
	}
	tree = func(p []byte, depth int) (first, last []byte, err error) {
		if depth > 64 {
			return nil, nil, errors.New("tree too deep")
		}
		flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
		if headerSize+count*elementSize > len(p) {
			return nil, nil, fmt.Errorf("page %d: %d elements do not fit", le.Uint64(p), count)
		}
		if flags == branchFlag && count == 0 {
			return nil, nil, fmt.Errorf("page %d: empty branch", le.Uint64(p))
		}
		var prev []byte
		for i := 0; i < count; i++ {
			e := headerSize + i*elementSize
			var pos, ksize, vsize uint64
			if flags == branchFlag {
				pos, ksize = uint64(le.Uint32(p[e:])), uint64(le.Uint32(p[e+4:]))
			} else {
				pos, ksize, vsize = uint64(le.Uint32(p[e+4:])), uint64(le.Uint32(p[e+8:])), uint64(le.Uint32(p[e+12:]))
			}
			if uint64(e)+pos+ksize+vsize > uint64(len(p)) {
				return nil, nil, fmt.Errorf("page %d: element %d lies outside the page", le.Uint64(p), i)
			}
			if ksize == 0 {
				return nil, nil, fmt.Errorf("page %d: element %d has an empty key", le.Uint64(p), i)
			}
			k := p[uint64(e)+pos : uint64(e)+pos+ksize]
			v := p[uint64(e)+pos+ksize : uint64(e)+pos+ksize+vsize]
			if i > 0 && bytes.Compare(prev, k) >= 0 {
				return nil, nil, fmt.Errorf("page %d: keys out of order", le.Uint64(p))
			}
			if i == 0 {
				first = k
			}
			switch {
			case flags == branchFlag:
				child, err := page(le.Uint64(p[e+8:]), branchFlag|leafFlag)
				if err != nil {
					return nil, nil, err
				}
				cf, cl, err := tree(child, depth+1)
				if err != nil {
					return nil, nil, err
				}
				// The element's key is at most the child's first key,
				// the child's keys below the next element's.
				if cf != nil && bytes.Compare(k, cf) > 0 || last != nil && cf != nil && bytes.Compare(last, cf) >= 0 {
					return nil, nil, fmt.Errorf("page %d: keys out of order", le.Uint64(p))
				}
				if cl != nil {
					last = cl
				}
			case le.Uint32(p[e:])&bucketLeaf != 0:
				if err := bucket(v, depth); err != nil {
					return nil, nil, fmt.Errorf("bucket %q: %w", k, err)
				}
				last = k
			default:
				last = k
			}
			if last != nil && flags == branchFlag && i+1 < count {
				// checked against the next element's key below
				ne := headerSize + (i+1)*elementSize
				npos, nksize := uint64(le.Uint32(p[ne:])), uint64(le.Uint32(p[ne+4:]))
				if uint64(ne)+npos+nksize <= uint64(len(p)) && bytes.Compare(last, p[uint64(ne)+npos:uint64(ne)+npos+nksize]) >= 0 {
					return nil, nil, fmt.Errorf("page %d: keys out of order", le.Uint64(p))
				}
			}
			prev = k
		}
		return first, last, nil
	}

	root, err := page(m.root, branchFlag|leafFlag)
	if err != nil {
		return err
	}
	if _, _, err := tree(root, 0); err != nil {
		return err
	}
	if m.freelist != noFreelist {
		p, err := page(m.freelist, freelistFlag)
		if err != nil {
			return fmt.Errorf("freelist: %w", err)
		}
		n, at := uint64(le.Uint16(p[10:])), uint64(headerSize)
		if n == 0xffff {
			if len(p) < headerSize+8 {
				return errors.New("freelist: too short")
			}
			n, at = le.Uint64(p[headerSize:]), headerSize+8
		}
		if n > (uint64(len(p))-at)/8 {
			return errors.New("freelist: ids do not fit")
		}
		prev := uint64(1)
		for i := uint64(0); i < n; i++ {
			id := le.Uint64(p[at+8*i:])
			if id <= prev || id >= m.hwm || seen[id] {
				return fmt.Errorf("freelist: page %d is in use, out of order or outside the file", id)
			}
			prev = id
		}
	}
	return nil
}
