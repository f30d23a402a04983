package testenv

import (
	"bytes"
	"os"
	"time"
)

// startRetrying starts a server on new free loopback ports, up to 5 times.
// Each try removes logs, then calls try with nPorts different ports that
// were free a moment ago; try starts the process and waits until it is
// ready, returning the process and the wait's error. A failed try is
// stopped; when one of logs then says "address already in use" (any case)
// or one of extraRaces (a port taken between freePort and the bind), the
// next try goes on with new ports. It returns the ready process, or fails
// the test with the last error and the tail of the logs.
func startRetrying(t T, name string, nPorts int, logs []string, try func(ports []int) (*proc, error), extraRaces ...string) *proc {
	t.Helper()
	races := append([]string{"address already in use"}, extraRaces...)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(nPorts)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range logs {
			os.Remove(f)
		}
		p, err := try(ports)
		if err == nil {
			return p
		}
		lastErr = err
		if p == nil {
			break
		}
		_ = p.stop(5 * time.Second)
		if !logsSayRace(logs, races) {
			break
		}
		t.Logf("testenv: %s port race (attempt %d), retrying with new ports", name, attempt+1)
	}
	t.Fatalf("testenv: %s did not start: %v%s", name, lastErr, logTail(30, logs...))
	return nil
}

// logsSayRace reports whether one of the files holds one of the markers,
// ignoring case.
func logsSayRace(files, markers []string) bool {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		data = bytes.ToLower(data)
		for _, m := range markers {
			if bytes.Contains(data, bytes.ToLower([]byte(m))) {
				return true
			}
		}
	}
	return false
}
