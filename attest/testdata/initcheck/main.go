// Command initcheck links the packages SDK users import and reports what
// their package initialization left behind: flags registered on the
// global FlagSet. attest's dependency test builds and runs it; it lives
// under testdata so that ./... never builds it.
package main

import (
	"flag"
	"fmt"
	"os"

	_ "github.com/teegate/teegate/attest"
	_ "github.com/teegate/teegate/attest/client"
	_ "github.com/teegate/teegate/policies"
)

func main() {
	n := 0
	flag.CommandLine.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(os.Stdout, "flag -%s registered at init\n", f.Name)
		n++
	})
	if n != 0 {
		os.Exit(1)
	}
	fmt.Println("no flags")
}
