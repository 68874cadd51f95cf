package kvprojection

import (
	"slices"
	"sort"
)

// blockSize is the target length of a block; a block splits at twice that.
// 256 pointers keep an insert's copy within a few cache lines' worth of
// work and the block directory small (400 blocks at 100,000 items).
const blockSize = 256

// blockList is an ordered list of unique items kept as a list of sorted
// blocks (the layout of Python's sortedcontainers): insert and delete cost a
// binary search and a copy within one block, rank access a walk over the
// block lengths. Not safe for concurrent use.
type blockList[T any] struct {
	cmp    func(a, b T) int
	blocks [][]T
	n      int
}

func newBlockList[T any](cmp func(a, b T) int) *blockList[T] {
	return &blockList[T]{cmp: cmp}
}

// build replaces the contents with items, which it sorts.
func (l *blockList[T]) build(items []T) {
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, l.cmp)
	l.blocks = l.blocks[:0]
	for len(sorted) > 0 {
		n := min(blockSize, len(sorted))
		l.blocks = append(l.blocks, slices.Clip(sorted[:n:n]))
		sorted = sorted[n:]
	}
	l.n = len(items)
}

// Len is the number of items.
func (l *blockList[T]) Len() int { return l.n }

// locate finds where x is or would be: a block and a position in it.
func (l *blockList[T]) locate(x T) (bi, pos int, found bool) {
	bi = sort.Search(len(l.blocks), func(i int) bool {
		b := l.blocks[i]
		return l.cmp(b[len(b)-1], x) >= 0
	})
	if bi == len(l.blocks) {
		bi--
		return bi, len(l.blocks[bi]), false
	}
	pos, found = slices.BinarySearchFunc(l.blocks[bi], x, l.cmp)
	return bi, pos, found
}

// Insert adds x, which must not be in the list.
func (l *blockList[T]) Insert(x T) {
	l.n++
	if len(l.blocks) == 0 {
		l.blocks = append(l.blocks, []T{x})
		return
	}
	bi, pos, _ := l.locate(x)
	b := slices.Insert(l.blocks[bi], pos, x)
	if len(b) <= 2*blockSize {
		l.blocks[bi] = b
		return
	}
	left := slices.Clone(b[:blockSize])
	right := slices.Clone(b[blockSize:])
	l.blocks[bi] = left
	l.blocks = slices.Insert(l.blocks, bi+1, right)
}

// Delete removes the item equal to x and reports whether there was one.
func (l *blockList[T]) Delete(x T) bool {
	if len(l.blocks) == 0 {
		return false
	}
	bi, pos, found := l.locate(x)
	if !found {
		return false
	}
	l.n--
	b := slices.Delete(l.blocks[bi], pos, pos+1)
	switch {
	case len(b) == 0:
		l.blocks = slices.Delete(l.blocks, bi, bi+1)
	case len(b) < blockSize/4 && bi+1 < len(l.blocks) && len(b)+len(l.blocks[bi+1]) <= blockSize:
		// Merge a small block into its successor so deletes cannot leave
		// many tiny blocks behind.
		l.blocks[bi] = append(b, l.blocks[bi+1]...)
		l.blocks = slices.Delete(l.blocks, bi+1, bi+2)
	default:
		l.blocks[bi] = b
	}
	return true
}

// Replace puts x in the place of the item equal to it (the same position
// in the order) and reports whether there was one.
func (l *blockList[T]) Replace(x T) bool {
	if len(l.blocks) == 0 {
		return false
	}
	bi, pos, found := l.locate(x)
	if found {
		l.blocks[bi][pos] = x
	}
	return found
}

// Ascend calls f on the items from rank from on, in order, until f returns
// false.
func (l *blockList[T]) Ascend(from int, f func(T) bool) {
	i := 0
	for ; i < len(l.blocks) && from >= len(l.blocks[i]); i++ {
		from -= len(l.blocks[i])
	}
	for ; i < len(l.blocks); i++ {
		for _, x := range l.blocks[i][from:] {
			if !f(x) {
				return
			}
		}
		from = 0
	}
}
