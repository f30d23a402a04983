package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// TimeV is what GNU time -v reports about one command.
type TimeV struct {
	UserSec   float64
	SysSec    float64
	MaxRSSKB  int64
	ExitCode  int
	VolCtxSw  int64 // voluntary context switches (waiting: I/O, network, fsync)
	InvCtxSw  int64 // involuntary context switches (preempted)
	FSOutputs int64 // file system outputs (512-byte blocks)
}

// ParseTimeV reads the output of `/usr/bin/time -v`. The lines are
// "\tName: value"; the names are GNU time's (time 1.9).
func ParseTimeV(r io.Reader) (TimeV, error) {
	var tv TimeV
	found := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), ": ")
		if !ok {
			continue
		}
		var err error
		switch name {
		case "User time (seconds)":
			tv.UserSec, err = strconv.ParseFloat(value, 64)
			found++
		case "System time (seconds)":
			tv.SysSec, err = strconv.ParseFloat(value, 64)
			found++
		case "Maximum resident set size (kbytes)":
			tv.MaxRSSKB, err = strconv.ParseInt(value, 10, 64)
			found++
		case "Exit status":
			tv.ExitCode, err = strconv.Atoi(value)
			found++
		case "Voluntary context switches":
			tv.VolCtxSw, err = strconv.ParseInt(value, 10, 64)
		case "Involuntary context switches":
			tv.InvCtxSw, err = strconv.ParseInt(value, 10, 64)
		case "File system outputs":
			tv.FSOutputs, err = strconv.ParseInt(value, 10, 64)
		}
		if err != nil {
			return tv, fmt.Errorf("bench: time -v line %q: %w", sc.Text(), err)
		}
	}
	if err := sc.Err(); err != nil {
		return tv, err
	}
	if found < 4 {
		return tv, fmt.Errorf("bench: time -v output incomplete (%d of 4 fields)", found)
	}
	return tv, nil
}
