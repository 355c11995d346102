package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shellCommands returns the teegate and teegate-worker command lines in
// the ```sh blocks of a Markdown file: words from the command to the end
// of its pipeline segment, continuation lines joined, env assignments and
// `ego run` in front skipped.
func shellCommands(t testing.TB, path string) [][]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cmds [][]string
	in := false
	var pending string
	for _, line := range strings.Split(string(raw), "\n") {
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "```") {
			in = !in && trim == "```sh"
			continue
		}
		if !in {
			continue
		}
		if c, ok := strings.CutSuffix(trim, `\`); ok {
			pending += c + " "
			continue
		}
		full := pending + trim
		pending = ""
		if i := strings.Index(full, " #"); i >= 0 {
			full = full[:i]
		}
		for _, seg := range strings.FieldsFunc(full, func(r rune) bool { return r == ';' || r == '&' || r == '|' }) {
			words := strings.Fields(seg)
			for len(words) > 0 && (strings.Contains(words[0], "=") || words[0] == "ego" || words[0] == "run") {
				words = words[1:]
			}
			if len(words) > 0 && (filepath.Base(words[0]) == "teegate" || filepath.Base(words[0]) == "teegate-worker") {
				cmds = append(cmds, words)
			}
		}
	}
	return cmds
}

// The commands deploy/'s READMEs tell people to run use only flags the
// commands define.
func TestReadmeCommands(t *testing.T) {
	n := 0
	for _, p := range []string{deployPath(t, "README.md"), deployPath(t, "ego", "README.md")} {
		for _, argv := range shellCommands(t, p) {
			if filepath.Base(argv[0]) == "teegate" && len(argv) > 2 && !strings.HasPrefix(argv[2], "-") {
				// teegate keys create, teegate verify quote, ...: two words.
				argv = append([]string{argv[0], argv[1] + " " + argv[2]}, argv[3:]...)
			}
			c, args := cliOf(t, argv)
			c.sub = strings.Fields(strings.Join(c.sub, " "))
			parseArgs(t, filepath.Base(filepath.Dir(p))+"/README.md: "+strings.Join(argv, " "), c, args)
			n++
		}
	}
	if n < 3 {
		t.Fatalf("found %d commands in the READMEs; the parser lost them", n)
	}
}
