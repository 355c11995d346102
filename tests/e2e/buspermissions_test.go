package e2e

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/internal/stacktest"
)

// permRow is one row of the permissions table in docs/architecture.md.
type permRow struct {
	conn              string
	full              bool // "everything in the application account"
	pubAllow, pubDeny []string
	subAllow, subDeny []string
	replies           bool // "replies to requests it received"
	pubText, subText  string
}

var backticked = regexp.MustCompile("`([^`]*)`")

// parseCell reads one cell: backticked subjects are allowed, those after
// "(never" denied; other parenthesized text is commentary.
func parseCell(cell string) (allow, deny []string, full, replies bool) {
	cell = strings.TrimSpace(cell)
	allowPart, denyPart, _ := strings.Cut(cell, "(never")
	if i := strings.IndexByte(denyPart, ';'); i >= 0 {
		denyPart = denyPart[:i] // commentary follows
	}
	full = strings.HasPrefix(cell, "everything")
	replies = strings.Contains(allowPart, "replies to requests it received")
	allowPart = regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(allowPart, "")
	if !full {
		for _, m := range backticked.FindAllStringSubmatch(allowPart, -1) {
			allow = append(allow, m[1])
		}
	}
	for _, m := range backticked.FindAllStringSubmatch(denyPart, -1) {
		deny = append(deny, m[1])
	}
	return allow, deny, full, replies
}

func readPermTable(t *testing.T) map[string]permRow {
	t.Helper()
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- permissions table: parsed by tests/e2e/buspermissions_test.go -->")
	table, _, ok2 := strings.Cut(rest, "<!-- end permissions table -->")
	if !ok || !ok2 {
		t.Fatal("docs/architecture.md has no permissions table")
	}
	rows := map[string]permRow{}
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[2:] {
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 3 {
			t.Fatalf("table row %q has %d cells", line, len(cells))
		}
		r := permRow{conn: cells[0], pubText: cells[1], subText: cells[2]}
		var fullSub bool
		r.pubAllow, r.pubDeny, r.full, r.replies = parseCell(cells[1])
		r.subAllow, r.subDeny, fullSub, _ = parseCell(cells[2])
		if r.full != fullSub {
			t.Fatalf("row %q: publish and subscribe disagree on full permissions", r.conn)
		}
		rows[r.conn] = r
	}
	for _, want := range []string{"admitted worker", "quarantined worker", "gateway", "admission", "operator tools"} {
		if _, ok := rows[want]; !ok {
			t.Fatalf("the permissions table has no row for %q", want)
		}
	}
	return rows
}

// serverPerms asks the server what it enforces on nc.
type serverPerms struct {
	Publish *struct {
		Allow []string `json:"allow"`
		Deny  []string `json:"deny"`
	} `json:"publish"`
	Subscribe *struct {
		Allow []string `json:"allow"`
		Deny  []string `json:"deny"`
	} `json:"subscribe"`
	Responses *struct {
		Max int           `json:"max"`
		TTL time.Duration `json:"ttl"`
	} `json:"responses"`
}

func userInfo(t *testing.T, nc *nats.Conn) *serverPerms {
	t.Helper()
	m, err := nc.Request("$SYS.REQ.USER.INFO", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Data struct {
			Permissions *serverPerms `json:"permissions"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	return r.Data.Permissions
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestBusPermissionsMatchTheTable checks, for each kind of connection, the
// permissions the server actually enforces against the table in
// docs/architecture.md ("Who may do what on the bus").
func TestBusPermissionsMatchTheTable(t *testing.T) {
	rows := readPermTable(t)
	s := stacktest.Start(t)
	h := newHostile(t, s, s.SimRoot, "perm-probe", "teegate-builtin", "other-model")
	if !h.st.Allow {
		t.Fatalf("probe worker not admitted: %+v", h.st)
	}
	q, qkey := neighbour(t, s)
	svc, err := s.Server.Connect("perm-operator")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	sys, err := s.Server.ConnectSystem("perm-admission-sys")
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()

	expand := func(subjects []string, nkey, evidence string, models []string) []string {
		var out []string
		for _, x := range subjects {
			x = strings.ReplaceAll(strings.ReplaceAll(x, "<nkey>", nkey), "<evidence>", evidence)
			if strings.Contains(x, "<model>") {
				for _, m := range models {
					out = append(out, strings.ReplaceAll(x, "<model>", m))
				}
				continue
			}
			out = append(out, x)
		}
		return out
	}
	check := func(row string, nc *nats.Conn, nkey, evidence string, models []string) {
		t.Run(row, func(t *testing.T) {
			want := rows[row]
			got := userInfo(t, nc)
			if want.full {
				b, _ := json.Marshal(got)
				if got != nil && (got.Publish != nil && (len(got.Publish.Allow) > 0 || !sameSet(got.Publish.Deny, want.pubDeny)) ||
					got.Subscribe != nil && (len(got.Subscribe.Allow) > 0 || !sameSet(got.Subscribe.Deny, want.subDeny))) {
					t.Fatalf("the table says full permissions (publish deny %q), the server enforces %s", want.pubDeny, b)
				}
				return
			}
			if got == nil || got.Publish == nil || got.Subscribe == nil {
				t.Fatalf("the server enforces no permissions on a %s", row)
			}
			checks := []struct {
				what      string
				want, got []string
			}{
				{"publish allow", expand(want.pubAllow, nkey, evidence, models), got.Publish.Allow},
				{"publish deny", expand(want.pubDeny, nkey, evidence, models), got.Publish.Deny},
				{"subscribe allow", expand(want.subAllow, nkey, evidence, models), got.Subscribe.Allow},
				{"subscribe deny", expand(want.subDeny, nkey, evidence, models), got.Subscribe.Deny},
			}
			for _, c := range checks {
				if !sameSet(c.want, c.got) {
					t.Errorf("%s: the table says %q, the server enforces %q", c.what, c.want, c.got)
				}
			}
			if want.replies != (got.Responses != nil) {
				t.Errorf("replies: the table says %v, the server says %+v", want.replies, got.Responses)
			}
			if got.Responses != nil && (got.Responses.Max != 1_000_000 || got.Responses.TTL < 10*time.Minute) {
				t.Errorf("reply bounds %+v, the table says 1,000,000 messages within the deadline + 1 min", got.Responses)
			}
		})
	}
	check("admitted worker", h.nc, h.nkey, h.ep.ID, []string{"other-model", "teegate-builtin"})
	check("quarantined worker", q, qkey, "", nil)
	check("gateway", svc, "", "", nil)
	check("admission", svc, "", "", nil)
	check("operator tools", svc, "", "", nil)
	// The system user (admission's second connection) is unrestricted in
	// the system account.
	if p := userInfo(t, sys); p != nil && p.Publish != nil && len(p.Publish.Allow) > 0 {
		t.Fatalf("system user restricted: %+v", p)
	}
}
