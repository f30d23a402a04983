package connector

import (
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/relay"
)

// A relay failure is kept in the ledger as data (ledger.Failure) and
// turned back into the relay's error type for the notices and the
// decisions, so nothing is parsed back from text. Records written before
// failures were data still read: ledger.Recipient.LastFailure rebuilds
// one from the reply text they kept.

// failureOf is e as ledger data.
func failureOf(e *relay.Error) *ledger.Failure {
	if e == nil {
		return nil
	}
	return &ledger.Failure{Op: e.Op, Code: e.Code, Enhanced: e.Enhanced, Temporary: e.Temporary, Local: e.Local, Message: e.Message}
}

// relayError is f as the relay's error type.
func relayError(f *ledger.Failure) *relay.Error {
	if f == nil {
		return nil
	}
	return &relay.Error{Op: f.Op, Code: f.Code, Enhanced: f.Enhanced, Temporary: f.Temporary, Local: f.Local, Message: f.Message}
}
