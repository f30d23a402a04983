package main

// The "in series" measure of the Lambda mode (lambda.go): how much of the
// AWS work the mail pipeline waited for.
//
// Definition. A mail link (POP3 or SMTP, through its delay proxy) is busy
// while any chunk is on it: from the moment the proxy read the chunk from
// one side to the moment it wrote it to the other (RTT/2 later). An AWS
// request is in series when the links were idle for its whole span: no
// byte of POP3 or SMTP was on its way while it ran, so the pipeline stood
// still, waiting on it (or on whatever else ran meanwhile: this program's
// CPU, the servers'). The stall time is the link-idle time during which at
// least one AWS request was outstanding, each instant counted once.
//
// This is a measured stand-in for "on the critical path", not a proof: a
// link busy with one message's bytes while the next message waits on S3
// hides that wait, and a link idle for another reason (the handler's CPU)
// while a request happens to run is counted against the request.

import (
	"sort"
	"time"
)

// span is a time interval [Start, End) as offsets from a common origin.
type span struct{ Start, End time.Duration }

func (s span) len() time.Duration { return max(0, s.End-s.Start) }

// awsCall is one AWS operation as its caller waited for it.
type awsCall struct {
	Op string // "S3 PutObject", "DynamoDB PutItem", ...
	span
}

// seriesStats is what seriesOnCriticalPath finds in one window.
type seriesStats struct {
	Calls int            // AWS calls that started in the window
	ByOp  map[string]int // the same, by operation
	// InSeries counts the calls of the window during whose whole span
	// neither mail link was busy; InSeriesTime is the sum of their
	// durations (overlapping calls each count in full).
	InSeries     int
	InSeriesTime time.Duration
	InSeriesByOp map[string]int
	// PartlyIdle counts the calls of the window that were link-idle for
	// part, not all, of their span.
	PartlyIdle int
	// StallTime is the link-idle time within the window during which at
	// least one AWS call (of any start) was outstanding.
	StallTime time.Duration
	// IdleTime is all link-idle time within the window.
	IdleTime time.Duration
}

// seriesOnCriticalPath applies the definition above to calls and the
// links' busy spans (any order, overlapping or not) within window.
func seriesOnCriticalPath(window span, busy []span, calls []awsCall) seriesStats {
	st := seriesStats{ByOp: map[string]int{}, InSeriesByOp: map[string]int{}}
	linkBusy := union(busy)
	var callSpans []span
	for _, c := range calls {
		callSpans = append(callSpans, c.span)
		if c.Start < window.Start || c.Start >= window.End {
			continue
		}
		st.Calls++
		st.ByOp[c.Op]++
		switch overlap := measure(intersect([]span{c.span}, linkBusy)); {
		case overlap == 0:
			st.InSeries++
			st.InSeriesTime += c.len()
			st.InSeriesByOp[c.Op]++
		case overlap < c.len():
			st.PartlyIdle++
		}
	}
	w := []span{window}
	busyInWindow := measure(intersect(linkBusy, w))
	st.IdleTime = window.len() - busyInWindow
	outstanding := intersect(union(callSpans), w)
	st.StallTime = measure(outstanding) - measure(intersect(outstanding, linkBusy))
	return st
}

// union returns the spans covered by any of spans, sorted and disjoint;
// empty spans are dropped.
func union(spans []span) []span {
	s := make([]span, 0, len(spans))
	for _, x := range spans {
		if x.End > x.Start {
			s = append(s, x)
		}
	}
	sort.Slice(s, func(i, j int) bool { return s[i].Start < s[j].Start })
	var out []span
	for _, x := range s {
		if n := len(out); n > 0 && x.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, x.End)
			continue
		}
		out = append(out, x)
	}
	return out
}

// intersect returns a ∩ b for sorted, disjoint a and b (as union makes).
func intersect(a, b []span) []span {
	var out []span
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := max(a[i].Start, b[j].Start), min(a[i].End, b[j].End)
		if lo < hi {
			out = append(out, span{lo, hi})
		}
		if a[i].End < b[j].End {
			i++
		} else {
			j++
		}
	}
	return out
}

func measure(spans []span) time.Duration {
	var d time.Duration
	for _, s := range spans {
		d += s.len()
	}
	return d
}

// callsWithin counts, over gaps, the calls whose whole span lies inside a
// gap, by operation. A call inside two gaps counts twice. The Lambda mode
// passes the SMTP sessions' turnarounds: with one session these are the
// requests the delivery slot waited through between two transactions; with
// several, a request inside one session's turnaround may be on another
// message's behalf, so the count is an upper bound per session.
func callsWithin(gaps []span, calls []awsCall) (n int, byOp map[string]int) {
	byOp = map[string]int{}
	for _, g := range gaps {
		for _, c := range calls {
			if c.Start >= g.Start && c.End <= g.End {
				n++
				byOp[c.Op]++
			}
		}
	}
	return n, byOp
}
