package ui

import (
	"embed"
	"io/fs"
	"path"
	"strings"

	"github.com/gofiber/fiber/v2"
)

//go:embed static
var static embed.FS

// wasm holds what `make wasm` generates: verifier.wasm.gz and
// wasm_exec.js ("all:" so that the directory embeds with only its
// .gitignore when they were not built).
//
//go:embed all:wasm
var wasm embed.FS

// Files the page loads from wasm/.
const (
	VerifierFile = "verifier.wasm.gz"
	ExecFile     = "wasm_exec.js"
)

// Built reports whether the in-browser verifier was built into this
// binary.
func Built() bool {
	_, err1 := fs.Stat(wasm, "wasm/"+VerifierFile)
	_, err2 := fs.Stat(wasm, "wasm/"+ExecFile)
	return err1 == nil && err2 == nil
}

// notBuilt is what /ui/verifier.wasm answers in a binary built without
// `make wasm`; the page shows it.
const notBuilt = "The in-browser verifier is not in this build of teegate. Build it with `make build` (or `make wasm`, then rebuild teegate)."

// contentSecurity lets the page load only its own files and compile its
// own WebAssembly: no inline script, no remote origin.
const contentSecurity = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Handler serves the page at GET /ui/* (and redirects /ui to /ui/).
func Handler() fiber.Handler {
	return func(c *fiber.Ctx) error {
		if string(c.Request().URI().Path()) == "/ui" {
			// The page's links are relative to /ui/.
			return c.Redirect("/ui/", fiber.StatusFound)
		}
		name := path.Clean("/" + c.Params("*"))[1:]
		if name == "" {
			name = "index.html"
		}
		c.Set("Content-Security-Policy", contentSecurity)
		c.Set("X-Content-Type-Options", "nosniff")
		c.Set("Referrer-Policy", "no-referrer")
		c.Set("X-Frame-Options", "DENY")
		c.Set(fiber.HeaderCacheControl, "no-cache")
		switch name {
		case "verifier.wasm":
			b, err := wasm.ReadFile("wasm/" + VerifierFile)
			if err != nil {
				return c.Status(fiber.StatusNotFound).Type("txt").SendString(notBuilt)
			}
			c.Set(fiber.HeaderContentType, "application/wasm")
			c.Set(fiber.HeaderContentEncoding, "gzip")
			return c.Send(b)
		case ExecFile:
			b, err := wasm.ReadFile("wasm/" + ExecFile)
			if err != nil {
				return c.Status(fiber.StatusNotFound).Type("txt").SendString(notBuilt)
			}
			c.Set(fiber.HeaderContentType, types[".js"])
			return c.Send(b)
		}
		if strings.Contains(name, "/") {
			return fiber.ErrNotFound
		}
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			return fiber.ErrNotFound
		}
		c.Set(fiber.HeaderContentType, types[path.Ext(name)])
		return c.Send(b)
	}
}
