package main

// The delay proxy: the bench's stand-in for a real network's round trip.
// netem (tc qdisc ... netem delay) needs the sch_netem module, which these
// machines do not have, so each server a tool talks to at --rtt sits behind
// a TCP proxy on 127.0.0.1 that holds every chunk it reads for RTT/2 before
// passing it on, in each direction.
//
// Why a queue, not a sleep per read: a proxy that read, slept, wrote would
// let one chunk through per delay (a 20 ms RTT would cap a stream at a few
// MB/s and turn every pipelined burst into a series of round trips). Here a
// reader stamps each chunk with its due time and queues it at once; a
// writer delivers chunks in order when they are due. A burst therefore
// arrives RTT/2 later as the same burst, as over a long fat link.
//
// What it does not model: loss, jitter, and TCP's congestion window. Both
// legs are loopback connections whose ACKs come back at once, so a sender
// is never held back by the delayed path: a real 20 ms link starts slow and
// needs round trips to open its window, which favours the bench's figures
// for large messages. The bandwidth is that of loopback, bounded only by
// maxQueuedChunks×delayChunkSize in flight per direction.
//
// An observer (SetObserver) sees every chunk once it has been delivered:
// its connection, direction, bytes, and when it was read and written. The
// Lambda mode (lambda.go) uses it to see when the mail links carry data.

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// delayChunkSize is the largest read; loopback reads rarely exceed it.
	delayChunkSize = 64 << 10
	// maxQueuedChunks bounds each direction's queue (64 MiB at most in
	// flight). At 10 ms one way that is a bandwidth-delay product of
	// 6.4 GB/s, above what loopback carries here: the bound costs nothing
	// in throughput and keeps a stalled receiver from growing the proxy
	// without limit (the reader then blocks, and TCP pushes back).
	maxQueuedChunks = 1024
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, delayChunkSize); return &b }}

// DelayProxy forwards connections from its listener on 127.0.0.1 to one
// target, delaying each direction by its one-way delay (RTT/2).
type DelayProxy struct {
	target string
	ln     net.Listener
	oneWay atomic.Int64 // nanoseconds; read when a chunk is queued
	// observer, if set, is called with every chunk after its write.
	observer atomic.Pointer[func(ChunkEvent)]
	connSeq  atomic.Uint64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// StartDelayProxy listens on 127.0.0.1:0 and forwards to target with the
// given round-trip time (0: no delay, just the proxy's own cost).
func StartDelayProxy(target string, rtt time.Duration) (*DelayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &DelayProxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.SetRTT(rtt)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where clients connect.
func (p *DelayProxy) Addr() string { return p.ln.Addr().String() }

// SetRTT changes the round-trip time for chunks read from now on; the
// bench sets it between runs, never during one.
func (p *DelayProxy) SetRTT(rtt time.Duration) { p.oneWay.Store(int64(rtt / 2)) }

// RTT is the round-trip time the proxy adds.
func (p *DelayProxy) RTT() time.Duration { return 2 * time.Duration(p.oneWay.Load()) }

// ChunkEvent is one chunk the proxy forwarded. The chunk was on the
// delayed link from Read (the proxy took it from its sender) to Written
// (the proxy handed it to its receiver, RTT/2 later).
type ChunkEvent struct {
	Conn     uint64 // the connection's number, from 1, in accept order
	Upstream bool   // client to server; false: server to client
	Data     []byte // the chunk; valid only during the call
	Read     time.Time
	Written  time.Time
}

// SetObserver makes f see every chunk delivered from now on (nil: none).
// f runs on the delivering goroutine, after the write: it must be quick,
// and it may run concurrently for different connections and directions.
func (p *DelayProxy) SetObserver(f func(ChunkEvent)) {
	if f == nil {
		p.observer.Store(nil)
		return
	}
	p.observer.Store(&f)
}

// Close stops accepting, closes every connection it forwards and waits for
// all its goroutines.
func (p *DelayProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// track registers c to be closed by Close; false if Close has begun.
func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed (a transient accept error would end the proxy too: the run then fails loudly)
		}
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

// serve forwards one connection. Each direction ends on its own: EOF from
// one side is passed on as a half-close (CloseWrite) after the data before
// it has been delivered, so a peer that shuts down its sending side still
// gets its answer. An error in either direction tears both down.
func (p *DelayProxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	if !p.track(client) {
		client.Close()
		return
	}
	defer p.untrack(client)
	defer client.Close()
	sc, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		return // the client sees the connection close: as a refused one, a round trip late
	}
	server := sc.(*net.TCPConn)
	if !p.track(server) {
		server.Close()
		return
	}
	defer p.untrack(server)
	defer server.Close()
	// The proxy must not add Nagle's algorithm of its own: what a tool sends
	// in one write leaves in one write, RTT/2 later.
	client.SetNoDelay(true)
	server.SetNoDelay(true)

	var failed sync.Once
	fail := func() {
		failed.Do(func() {
			client.Close()
			server.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	conn := p.connSeq.Add(1)
	go func() { defer wg.Done(); p.pipe(server, client, conn, true, fail) }()
	go func() { defer wg.Done(); p.pipe(client, server, conn, false, fail) }()
	wg.Wait()
}

type delayedChunk struct {
	buf  *[]byte
	n    int
	read time.Time
	due  time.Time
}

// pipe copies src to dst through a queue of timestamped chunks: this
// goroutine reads and stamps, a second one delivers each chunk when it is
// due, in order. conn and upstream are what the observer is told.
func (p *DelayProxy) pipe(dst, src *net.TCPConn, conn uint64, upstream bool, fail func()) {
	q := make(chan delayedChunk, maxQueuedChunks)
	done := make(chan struct{})
	go func() {
		defer close(done)
		broken := false
		for ch := range q {
			if !broken {
				if d := time.Until(ch.due); d > 0 {
					time.Sleep(d)
				}
				if _, err := dst.Write((*ch.buf)[:ch.n]); err != nil {
					broken = true
					fail() // unblocks the reader; keep draining to return the buffers
				} else if f := p.observer.Load(); f != nil {
					(*f)(ChunkEvent{Conn: conn, Upstream: upstream, Data: (*ch.buf)[:ch.n], Read: ch.read, Written: time.Now()})
				}
			}
			chunkPool.Put(ch.buf)
		}
	}()
	var readErr error
	var endDue time.Time
	for {
		buf := chunkPool.Get().(*[]byte)
		n, err := src.Read(*buf)
		if n > 0 {
			now := time.Now()
			q <- delayedChunk{buf: buf, n: n, read: now, due: now.Add(time.Duration(p.oneWay.Load()))}
		} else {
			chunkPool.Put(buf)
		}
		if err != nil {
			readErr, endDue = err, time.Now().Add(time.Duration(p.oneWay.Load()))
			break
		}
	}
	close(q)
	<-done
	if errors.Is(readErr, io.EOF) {
		// The peer's FIN travels as its data does: after its last chunk
		// and RTT/2 after it arrived. The other direction goes on until
		// its own end.
		if d := time.Until(endDue); d > 0 {
			time.Sleep(d)
		}
		if err := dst.CloseWrite(); err != nil {
			fail()
		}
		return
	}
	fail() // a reset or a closed connection: end both directions now
}
