package templatetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/testenv"
)

// samcheckPython finds a Python with cfn-lint and the SAM translator:
// $POPCONN_PYTHON, python3 on PATH, then pyenv's shim (where the packages
// are installed on the project's machines even when PATH names Debian's
// python3 first).
func samcheckPython() (string, bool) {
	var candidates []string
	if p := os.Getenv("POPCONN_PYTHON"); p != "" {
		candidates = append(candidates, p)
	}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	root := os.Getenv("PYENV_ROOT")
	if root == "" {
		if home, err := os.UserHomeDir(); err == nil {
			root = filepath.Join(home, ".pyenv")
		}
	}
	candidates = append(candidates, filepath.Join(root, "shims", "python3"))
	for _, p := range candidates {
		if exec.Command(p, "-c", "import cfnlint, samtranslator").Run() == nil {
			return p, true
		}
	}
	return "", false
}

// TestSAMTranslatorAndCfnLint runs samcheck.py: cfn-lint on template.yaml
// and the SAM translator on it for each parameter set (paramsets.json),
// then cfn-lint on each translated template. Without the Python packages
// it skips, or fails when integration is required or
// POPCONN_TEMPLATE_TOOLS=required (make template-check).
func TestSAMTranslatorAndCfnLint(t *testing.T) {
	py, ok := samcheckPython()
	if !ok {
		msg := "no python3 with cfn-lint and aws-sam-translator (pip install cfn-lint aws-sam-translator, or set POPCONN_PYTHON)"
		if testenv.Required() || os.Getenv("POPCONN_TEMPLATE_TOOLS") == "required" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "samcheck.py", filepath.Join(repoRoot(t), "template.yaml"))
	out, err := cmd.CombinedOutput()
	t.Logf("%s\n%s", py, out)
	if err != nil {
		t.Fatalf("samcheck.py: %v", err)
	}
}
