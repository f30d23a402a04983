package connector

import "sync"

// ordered is the queue between two stages: first in, first out, bounded,
// so the later stage sees the messages in the order the earlier one
// handed them on, and the earlier one runs at most its size ahead. The
// consumer can cancel it: the producer's push then fails instead of
// blocking, and the consumer drains what is left.
type ordered[T any] struct {
	ch   chan T
	quit chan struct{}
	once sync.Once
}

func newOrdered[T any](size int) *ordered[T] {
	return &ordered[T]{ch: make(chan T, size), quit: make(chan struct{})}
}

// push hands v on; false once the consumer cancelled.
func (q *ordered[T]) push(v T) bool {
	select {
	case <-q.quit:
		return false
	default:
	}
	select {
	case q.ch <- v:
		return true
	case <-q.quit:
		return false
	}
}

// cancelled reports whether the consumer cancelled.
func (q *ordered[T]) cancelled() bool {
	select {
	case <-q.quit:
		return true
	default:
		return false
	}
}

// out is what the consumer ranges over; it ends after close.
func (q *ordered[T]) out() <-chan T { return q.ch }

// close is the producer's: nothing more comes.
func (q *ordered[T]) close() { close(q.ch) }

// cancel is the consumer's: take nothing more.
func (q *ordered[T]) cancel() { q.once.Do(func() { close(q.quit) }) }
