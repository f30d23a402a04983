package ledger

import (
	"strconv"
	"strings"
)

// Failure is a delivery failure as data: what the relay reported. The
// connector converts it from and to its relay's error; the ledger keeps
// it as fields so that nothing is ever parsed back from text.
type Failure struct {
	Op        string `json:"op,omitempty"`       // the SMTP step: "connect", "tls", "ehlo", "auth", "mail", "rcpt", "data", ...
	Code      int    `json:"code,omitempty"`     // basic reply code; 0 = no reply (local or connection failure)
	Enhanced  string `json:"enhanced,omitempty"` // "5.7.1"
	Temporary bool   `json:"temporary,omitempty"`
	Local     bool   `json:"local,omitempty"`   // decided by the connector itself (no server reply)
	Message   string `json:"message,omitempty"` // the server's text, without code and enhanced code
}

// LastFailure returns the recipient's last failure, or nil when its
// Status is not Deferred or Rejected (it has not failed, or a later
// outcome replaced the failure). The result is a copy: changing it leaves
// the record alone.
//
// A recipient recorded before Failure existed has only Code, Enhanced and
// Reply, where Reply is the relay's error text "smtp OP: CODE ENHANCED
// MESSAGE" (parts absent when empty). LastFailure rebuilds the Failure
// from them by the rule the connector used to read them back: Temporary
// is Status Deferred, Local is Code 0, Op is the word before the first
// ": " when it holds no blank, and Message is the rest without the code
// and the enhanced code. Replies in another form keep their whole text
// as Message.
func (rc Recipient) LastFailure() *Failure {
	if rc.Status != Deferred && rc.Status != Rejected {
		return nil
	}
	if rc.Failure != nil {
		f := *rc.Failure
		return &f
	}
	f := &Failure{Code: rc.Code, Enhanced: rc.Enhanced, Temporary: rc.Status == Deferred, Local: rc.Code == 0}
	msg := strings.TrimPrefix(rc.Reply, "smtp ")
	if op, rest, ok := strings.Cut(msg, ": "); ok && op != "" && !strings.ContainsAny(op, " \t") {
		f.Op, msg = op, rest
	}
	if rc.Code != 0 {
		msg = strings.TrimPrefix(msg, strconv.Itoa(rc.Code)+" ")
	}
	if rc.Enhanced != "" {
		msg = strings.TrimPrefix(msg, rc.Enhanced+" ")
	}
	f.Message = msg
	return f
}
