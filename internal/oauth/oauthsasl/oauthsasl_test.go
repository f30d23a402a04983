package oauthsasl

import "testing"

func TestInitialResponseRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		mech, user, host string
		port             int
		want             string
	}{
		{XOAUTH2, "alice@example.org", "pop.example.org", 995, "user=alice@example.org\x01auth=Bearer tok-1\x01\x01"},
		// RFC 7628 §3.1 layout; ',' and '=' in the name escaped (RFC 5801).
		{OAuthBearer, "a,b=c", "pop.example.org", 995, "n,a=a=2Cb=3Dc,\x01host=pop.example.org\x01port=995\x01auth=Bearer tok-1\x01\x01"},
		{OAuthBearer, "bob", "", 0, "n,a=bob,\x01auth=Bearer tok-1\x01\x01"},
	} {
		ir, err := InitialResponse(tc.mech, tc.user, tc.host, tc.port, "tok-1")
		if err != nil || string(ir) != tc.want {
			t.Errorf("InitialResponse(%s, %q) = %q, %v; want %q", tc.mech, tc.user, ir, err, tc.want)
			continue
		}
		user, token, err := ParseInitialResponse(tc.mech, ir)
		if err != nil || user != tc.user || token != "tok-1" {
			t.Errorf("ParseInitialResponse(%s, %q) = %q, %q, %v", tc.mech, ir, user, token, err)
		}
	}
	if _, err := InitialResponse(XOAUTH2, "alice", "", 0, "tok\x01en"); err == nil {
		t.Error("a token with a control character was accepted")
	}
}

func TestChallenge(t *testing.T) {
	for _, tc := range []struct {
		in       string
		ok, renw bool
	}{
		{`{"status":"invalid_token","scope":"mail"}`, true, true},
		{`{"status":"401","schemes":"bearer","scope":"mail"}`, true, true},
		{`{"status":"insufficient_scope"}`, true, false},
		{`{"status":"403"}`, true, false},
		{`not json`, false, false},
		{`{"scope":"x"}`, false, false},
	} {
		c, ok := ParseChallenge([]byte(tc.in))
		if ok != tc.ok || ok && c.TokenRejected() != tc.renw {
			t.Errorf("ParseChallenge(%s) = %+v, %v; TokenRejected %v; want ok %v, renewable %v", tc.in, c, ok, c.TokenRejected(), tc.ok, tc.renw)
		}
	}
	if string(ErrorReply(OAuthBearer)) != "\x01" || len(ErrorReply(XOAUTH2)) != 0 || ErrorReply(XOAUTH2) == nil {
		t.Error("ErrorReply: want 0x01 for OAUTHBEARER and a non-nil empty reply for XOAUTH2")
	}
}
