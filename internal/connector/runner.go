package connector

import (
	"context"
	"sync"
)

// PollAll polls every mailbox once, at most parallel at a time, each
// mailbox by one worker, and returns the results in the order given. A
// panic in one mailbox's poll becomes that mailbox's error (Poll recovers
// it).
func (c *Connector) PollAll(ctx context.Context, mailboxes []Mailbox, parallel int) []Result {
	if parallel < 1 {
		parallel = 1
	}
	results := make([]Result, len(mailboxes))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(parallel, len(mailboxes)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				results[i] = c.Poll(ctx, mailboxes[i])
			}
		}()
	}
	for i := range mailboxes {
		work <- i
	}
	close(work)
	wg.Wait()
	return results
}
