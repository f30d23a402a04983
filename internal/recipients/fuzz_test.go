package recipients

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/mailaddr"
	"github.com/popconnector/popconnector/internal/message"
)

// FuzzResolve feeds arbitrary headers through the pipeline's Inspector into
// Resolve and checks the guarantees of the package doc: no panic, and every
// recipient local, envelope-safe and unique.
func FuzzResolve(f *testing.F) {
	files, err := filepath.Glob("testdata/*.eml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	r, err := NewResolver(GlobalOptions{
		LocalDomains: []string{"corp.example", "corp2.example"},
		UseTo:        true,
		Rewrite:      map[string]string{"*@isp.example": "*@corp.example", "sales@isp.example": "orders@corp2.example"},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		in := message.NewInspector()
		in.Write(raw)
		res := r.Resolve(in.Summary().Header)
		if len(res.Recipients) == 0 {
			t.Fatalf("no recipients: %+v", res)
		}
		if res.Fallback != (res.Source == "fallback") {
			t.Fatalf("Fallback %v with Source %q", res.Fallback, res.Source)
		}
		seen := make(map[string]bool)
		for _, a := range res.Recipients {
			if err := mailaddr.Mailbox(a); err != nil {
				t.Fatalf("recipient %q is not a bare mailbox: %v", a, err)
			}
			if d := domainOf(a); d != "corp.example" && d != "corp2.example" {
				t.Fatalf("recipient %q is not local", a)
			}
			k := strings.ToLower(a)
			if seen[k] {
				t.Fatalf("duplicate recipient %q in %q", a, res.Recipients)
			}
			seen[k] = true
		}
		if len(res.Problems) > maxListed+1 || len(res.Ignored) > maxListed+1 {
			t.Fatalf("lists not capped: %d problems, %d ignored", len(res.Problems), len(res.Ignored))
		}
	})
}
