package main

import (
	"reflect"
	"testing"
	"time"
)

func TestSeriesOnCriticalPath(t *testing.T) {
	ms := func(a, b int) span {
		return span{time.Duration(a) * time.Millisecond, time.Duration(b) * time.Millisecond}
	}
	call := func(op string, a, b int) awsCall { return awsCall{Op: op, span: ms(a, b)} }
	d := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tc := range []struct {
		name   string
		window span
		busy   []span
		calls  []awsCall
		want   seriesStats
	}{{
		name:   "links always busy: nothing in series",
		window: ms(0, 100),
		busy:   []span{ms(0, 60), ms(50, 100)},
		calls:  []awsCall{call("S3 PutObject", 10, 20), call("DynamoDB PutItem", 55, 59)},
		want:   seriesStats{Calls: 2, ByOp: map[string]int{"S3 PutObject": 1, "DynamoDB PutItem": 1}, InSeriesByOp: map[string]int{}},
	}, {
		name:   "a call in an idle gap is in series; the gap around it is idle, not stalled",
		window: ms(0, 100),
		busy:   []span{ms(0, 40), ms(60, 100)},
		calls:  []awsCall{call("DynamoDB PutItem", 45, 55)},
		want:   seriesStats{Calls: 1, ByOp: map[string]int{"DynamoDB PutItem": 1}, InSeriesByOp: map[string]int{"DynamoDB PutItem": 1}, InSeries: 1, InSeriesTime: d(10), StallTime: d(10), IdleTime: d(20)},
	}, {
		name:   "a call reaching into a busy span is partly idle",
		window: ms(0, 100),
		busy:   []span{ms(0, 40), ms(60, 100)},
		calls:  []awsCall{call("S3 PutObject", 35, 50)},
		want:   seriesStats{Calls: 1, ByOp: map[string]int{"S3 PutObject": 1}, InSeriesByOp: map[string]int{}, PartlyIdle: 1, StallTime: d(10), IdleTime: d(20)},
	}, {
		name:   "overlapping calls in one gap: each in series, the stall counted once",
		window: ms(0, 100),
		busy:   []span{ms(0, 40), ms(60, 100)},
		calls:  []awsCall{call("S3 PutObject", 41, 50), call("DynamoDB PutItem", 45, 55)},
		want:   seriesStats{Calls: 2, ByOp: map[string]int{"S3 PutObject": 1, "DynamoDB PutItem": 1}, InSeriesByOp: map[string]int{"S3 PutObject": 1, "DynamoDB PutItem": 1}, InSeries: 2, InSeriesTime: d(19), StallTime: d(14), IdleTime: d(20)},
	}, {
		name:   "spans touching end to start do not overlap",
		window: ms(0, 100),
		busy:   []span{ms(0, 40), ms(50, 100)},
		calls:  []awsCall{call("DynamoDB UpdateItem", 40, 50)},
		want:   seriesStats{Calls: 1, ByOp: map[string]int{"DynamoDB UpdateItem": 1}, InSeriesByOp: map[string]int{"DynamoDB UpdateItem": 1}, InSeries: 1, InSeriesTime: d(10), StallTime: d(10), IdleTime: d(10)},
	}, {
		name:   "calls starting outside the window are not counted; their stall inside it is",
		window: ms(20, 80),
		busy:   []span{ms(30, 70)},
		calls:  []awsCall{call("DynamoDB Query", 0, 25), call("DynamoDB DeleteItem", 75, 90)},
		want:   seriesStats{Calls: 1, ByOp: map[string]int{"DynamoDB DeleteItem": 1}, InSeriesByOp: map[string]int{"DynamoDB DeleteItem": 1}, InSeries: 1, InSeriesTime: d(15), StallTime: d(10), IdleTime: d(20)},
	}, {
		name:   "no link activity at all: the whole window idle",
		window: ms(0, 50),
		calls:  []awsCall{call("S3 PutObject", 10, 20)},
		want:   seriesStats{Calls: 1, ByOp: map[string]int{"S3 PutObject": 1}, InSeriesByOp: map[string]int{"S3 PutObject": 1}, InSeries: 1, InSeriesTime: d(10), StallTime: d(10), IdleTime: d(50)},
	}, {
		name:   "unsorted, nested busy spans and an empty call",
		window: ms(0, 100),
		busy:   []span{ms(70, 90), ms(10, 30), ms(15, 20), ms(30, 35)},
		calls:  []awsCall{call("S3 HeadObject", 50, 50), call("S3 PutObject", 33, 40)},
		want:   seriesStats{Calls: 2, ByOp: map[string]int{"S3 HeadObject": 1, "S3 PutObject": 1}, InSeriesByOp: map[string]int{"S3 HeadObject": 1}, InSeries: 1, PartlyIdle: 1, StallTime: d(5), IdleTime: d(55)},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := seriesOnCriticalPath(tc.window, tc.busy, tc.calls)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestSteadyWindow(t *testing.T) {
	at := func(ms ...int) []time.Duration {
		var out []time.Duration
		for _, m := range ms {
			out = append(out, time.Duration(m)*time.Millisecond)
		}
		return out
	}
	// 10 messages: 10% is 1 each side; the window runs from the 1st
	// message's end to the 9th's and holds the 2nd to the 9th (8).
	w, n, ok := steadyWindow(at(50, 10, 20, 30, 40, 60, 70, 80, 90, 100))
	if !ok || w != (span{10 * time.Millisecond, 90 * time.Millisecond}) || n != 8 {
		t.Errorf("10 messages: window %v, %d messages, %v", w, n, ok)
	}
	// 50 messages: 5 each side, 40 in the window.
	var ends []time.Duration
	for i := range 50 {
		ends = append(ends, time.Duration(i+1)*time.Second)
	}
	w, n, ok = steadyWindow(ends)
	if !ok || w != (span{5 * time.Second, 45 * time.Second}) || n != 40 {
		t.Errorf("50 messages: window %v, %d messages, %v", w, n, ok)
	}
	if _, _, ok := steadyWindow(at(1, 2)); ok {
		t.Errorf("2 messages gave a window")
	}
}

func TestFinalDotScanner(t *testing.T) {
	var sc finalDots
	feed := func(conn uint64, s string) int { return sc.scan(conn, []byte(s)) }
	if n := feed(1, "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"); n != 1 {
		t.Errorf("whole message: %d ends", n)
	}
	// Split across chunks, and another connection in between.
	if n := feed(1, "MAIL FROM:<a>\r\n...body\r\n"); n != 0 {
		t.Errorf("no end yet: %d", n)
	}
	if n := feed(2, ".\r\n"); n != 0 {
		t.Errorf("a dot on a fresh connection is no message end: %d", n)
	}
	if n := feed(1, "."); n != 0 {
		t.Errorf("half an end: %d", n)
	}
	if n := feed(1, "\r\nQUIT\r\n"); n != 1 {
		t.Errorf("split end: %d", n)
	}
	if n := feed(3, "a\r\n.\r\nb\r\n.\r\n"); n != 2 {
		t.Errorf("two ends in a chunk: %d", n)
	}
}

func TestLinkRecorderTurnarounds(t *testing.T) {
	l := &linkRecorder{}
	l.reset()
	t0 := l.origin()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	obs := l.observer(true)
	send := func(conn uint64, up bool, data string, read, written int) {
		obs(ChunkEvent{Conn: conn, Upstream: up, Data: []byte(data), Read: at(read), Written: at(written)})
	}
	send(1, true, "MAIL FROM:<a>\r\n", 0, 10)
	send(1, false, "250 ok\r\n", 12, 22) // not a reply to a final dot
	send(1, true, "DATA\r\n", 23, 33)
	send(2, true, "body\r\n.\r\n", 30, 40) // another session's end
	send(1, true, "body\r\n.\r\n", 40, 50)
	send(1, false, "250 queued\r\n", 52, 62)
	send(2, false, "250 queued\r\n", 55, 65)
	send(1, true, "MAIL FROM:<b>\r\n", 70, 80) // session 1 turned around in 8 ms
	send(2, true, "QUIT\r\n", 90, 100)         // session 2 in 25 ms
	ends, busy, turns := l.snapshot()
	if len(ends) != 2 || ends[0] != 40*time.Millisecond || ends[1] != 50*time.Millisecond {
		t.Errorf("ends %v", ends)
	}
	if len(busy) != 9 {
		t.Errorf("%d busy spans, want 9", len(busy))
	}
	want := []span{{62 * time.Millisecond, 70 * time.Millisecond}, {65 * time.Millisecond, 90 * time.Millisecond}}
	if !reflect.DeepEqual(turns, want) {
		t.Errorf("turnarounds %v, want %v", turns, want)
	}
	// The POP3 link's chunks are busy time, nothing else.
	l.observer(false)(ChunkEvent{Conn: 1, Upstream: true, Data: []byte("x\r\n.\r\n"), Read: at(100), Written: at(110)})
	if ends, busy, _ := l.snapshot(); len(ends) != 2 || len(busy) != 10 {
		t.Errorf("a POP3 chunk changed the ends (%d) or was not busy time (%d)", len(ends), len(busy))
	}
}

func TestCallsWithin(t *testing.T) {
	ms := func(a, b int) span {
		return span{time.Duration(a) * time.Millisecond, time.Duration(b) * time.Millisecond}
	}
	gaps := []span{ms(10, 40), ms(30, 60)}
	calls := []awsCall{
		{"DynamoDB PutItem", ms(12, 20)}, // in the first gap
		{"DynamoDB Query", ms(32, 38)},   // in both
		{"S3 GetObject", ms(35, 45)},     // only in the second
		{"S3 PutObject", ms(55, 65)},     // reaches past both
	}
	n, byOp := callsWithin(gaps, calls)
	want := map[string]int{"DynamoDB PutItem": 1, "DynamoDB Query": 2, "S3 GetObject": 1}
	if n != 4 || !reflect.DeepEqual(byOp, want) {
		t.Errorf("got %d %v, want 4 %v", n, byOp, want)
	}
}
