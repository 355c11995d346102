package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/teegate/teegate/gateway"
)

// runStatus prints the fleet as the gateway's admission judged it, from
// GET /v1/attestation/workers (admin key).
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "the gateway's base URL")
	key := fs.String("api-key", "", "an admin API key (default $TEEGATE_API_KEY)")
	asJSON := fs.Bool("json", false, "print the gateway's JSON instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *key == "" {
		*key = os.Getenv("TEEGATE_API_KEY")
	}
	if *key == "" {
		return usageErrorf(fs, "an admin API key is required (--api-key or $TEEGATE_API_KEY)")
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, strings.TrimRight(*base, "/")+"/v1/attestation/workers", nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+*key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking the gateway: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the fleet: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("the gateway answered %d: %s", resp.StatusCode, e.Error.Message)
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var list struct {
		Data    []gateway.WorkerStatus  `json:"data"`
		Pending []gateway.PendingStatus `json:"pending"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("decoding the fleet: %w", err)
	}
	if err := printFleet(stdout, list.Data, time.Now()); err != nil {
		return err
	}
	return printPending(stdout, list.Pending)
}

// printPending prints the cold-start queue per model: requests waiting
// at this gateway, and tickets fleet-wide (the autoscaler's signal).
func printPending(w io.Writer, pending []gateway.PendingStatus) error {
	if len(pending) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nMODEL\tWAITING HERE\tQUEUED (FLEET)")
	for _, p := range pending {
		q := fmt.Sprint(p.Queued)
		if p.Queued < 0 {
			q = "unknown"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", p.Model, p.Waiting, q)
	}
	return tw.Flush()
}

func printFleet(w io.Writer, fleet []gateway.WorkerStatus, now time.Time) error {
	if len(fleet) == 0 {
		_, err := fmt.Fprintln(w, "no workers")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tDECISION\tTEE\tGPUS\tMODELS\tLOAD\tMEASUREMENT\tEVIDENCE AGE\tLAST SEEN\tREASONS")
	for _, ws := range fleet {
		tee, gpus, meas := "-", "-", "-"
		if c := ws.Claims; c != nil {
			tee = c.TEE
			if c.Simulated && c.TEE != "simulated" {
				tee += " (simulated)"
			}
			if c.Debug {
				tee += " DEBUG"
			}
			if len(c.GPUs) > 0 {
				gpus = strings.Join(c.GPUs, ",")
			}
			for _, m := range []struct{ name, v string }{{"MRTD", c.MRTD}, {"MRENCLAVE", c.MREnclave}, {"MEASUREMENT", c.Measurement}} {
				if m.v != "" {
					meas = m.name + " " + shortHex(m.v)
					break
				}
			}
		}
		seen := "not serving"
		if ws.Serving {
			seen = ago(now.Sub(ws.HeartbeatAt))
		}
		// Requests in flight of its capacity, as its record says.
		load := "-"
		switch {
		case !ws.Serving:
		case ws.Draining:
			load = fmt.Sprintf("%d/%d draining", ws.InFlight, ws.MaxConcurrency)
		case !ws.Ready:
			load = "engine down"
		default:
			load = fmt.Sprintf("%d/%d", ws.InFlight, ws.MaxConcurrency)
		}
		reasons := strings.Join(ws.Reasons, "; ")
		if reasons == "" {
			reasons = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ws.WorkerID, strings.ToUpper(ws.Decision), tee, gpus,
			strings.Join(ws.Models, ","), load, meas, age(ws.EvidenceAgeSeconds), seen, reasons)
	}
	return tw.Flush()
}

func shortHex(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

func age(seconds int64) string {
	if seconds < 0 {
		return "-"
	}
	return (time.Duration(seconds) * time.Second).String()
}

func ago(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String() + " ago"
}
