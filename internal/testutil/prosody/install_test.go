package prosody

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

// The launcher accepts mod_cloud_notify where the install script does, so
// that a machine the script calls ready never fails the tests (or the
// other way round).
func TestPluginPathsMatchTestDeps(t *testing.T) {
	script, err := os.ReadFile("../../../scripts/test-deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	var inScript []string
	for _, m := range regexp.MustCompile(`/usr/lib/prosody/modules/[^\s\]"']*mod_cloud_notify\.lua`).FindAll(script, -1) {
		inScript = append(inScript, string(m))
	}
	slices.Sort(inScript)
	ours := slices.Sorted(slices.Values(pluginFiles))
	if !slices.Equal(inScript, ours) {
		t.Fatalf("scripts/test-deps.sh accepts %q, the launcher %q", inScript, ours)
	}
}
