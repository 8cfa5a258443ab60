package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator"
	"github.com/klink-io/klink/replicator/membership"
)

// adminURL is the running daemon's admin address: --admin, or the config
// file's admin.listen.
func adminURL(adminFlag, path string) (string, *config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return "", nil, err
	}
	addr := adminFlag
	if addr == "" {
		addr = cfg.Admin.Listen
	}
	if addr == "off" {
		return "", cfg, fmt.Errorf("config %s: admin.listen is off, so the daemon cannot be asked; pass --admin HOST:PORT", path)
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
		return "", cfg, fmt.Errorf("config %s: admin.listen %q has no fixed port; pass --admin HOST:PORT (the daemon logs the address it listens on)", path, addr)
	}
	return "http://" + addr, cfg, nil
}

var adminClient = &http.Client{Timeout: 10 * time.Second}

// statusCmd prints the running daemon's status: per link and mirror.
func statusCmd(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "config file (for admin.listen)")
	admin := fs.String("admin", "", "the daemon's admin address (default: the config's admin.listen)")
	out := fs.String("o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, body, err := fetchStatus(*admin, *path)
	if err != nil {
		return err
	}
	if *out == "json" {
		_, err := os.Stdout.Write(body)
		return err
	}
	printStatus(os.Stdout, st)
	return nil
}

// exists reports whether path names something (an unreadable file
// exists: config.Load then says why it cannot be read).
func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// fetchStatus asks the running daemon for /status.
func fetchStatus(adminFlag, path string) (replicator.Status, []byte, error) {
	var st replicator.Status
	base := "http://" + adminFlag
	if adminFlag == "" && path == config.DefaultPath && !exists(path) {
		// No config where the package puts it (klink run with a config
		// elsewhere, or on another host's copy): the daemon's default
		// admin address is the best guess, and says so if wrong.
		base = "http://" + config.DefaultAdminListen
	} else if adminFlag == "" {
		// The address comes from the config file (with --admin, the
		// file is not needed).
		var err error
		if base, _, err = adminURL(adminFlag, path); err != nil {
			return st, nil, err
		}
	} else if _, _, err := net.SplitHostPort(adminFlag); err != nil {
		return st, nil, fmt.Errorf("--admin %q: %w (want HOST:PORT)", adminFlag, err)
	}
	resp, err := adminClient.Get(base + "/status")
	if err != nil {
		return st, nil, fmt.Errorf("asking the daemon at %s: %w (is klink running?)", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, nil, fmt.Errorf("daemon at %s: %s: %s", base, resp.Status, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, nil, fmt.Errorf("daemon at %s: %w", base, err)
	}
	return st, body, nil
}

func printStatus(w io.Writer, st replicator.Status) {
	if c := st.Cluster; c != nil {
		printCluster(w, c)
	}
	for _, l := range st.Links {
		fmt.Fprintf(w, "link %s  %s  id %s  source cluster %s  destination cluster %s  %d mirror topics\n",
			l.Name, l.State, dash(l.LinkID), dash(l.SourceClusterID), dash(l.DestinationClusterID), len(l.Mirrors))
		if l.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", l.Error)
		}
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  MIRROR\tSTATE\tDESIRED\tLAG\tLAG TIME\tLAST SOURCE OFFSETS\tREASON")
		for _, m := range l.Mirrors {
			lag, lagTime := fmt.Sprint(m.Lag), (time.Duration(m.LagMillis) * time.Millisecond).String()
			offsets := map[int32]int64{}
			for _, p := range m.Partitions {
				offsets[p.Partition] = p.LastSourceOffset
			}
			reason := m.Reason
			if m.Stop != nil {
				lag, lagTime = "-", "-"
				offsets = m.Stop.LastSourceOffsets
				reason = fmt.Sprintf("%s (%s at %s)", m.Reason, m.Stop.By, m.Stop.At.Format(time.RFC3339))
			}
			if m.Refused != "" {
				reason += "; refused: " + m.Refused
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.State, m.Desired, lag, lagTime, formatOffsets(offsets), reason)
		}
		tw.Flush()
		if c := st.Cluster; c != nil {
			for _, m := range l.Mirrors {
				fmt.Fprintf(w, "  %s: control on %s; partitions %s\n", m.Name, dash(m.Owner), partitionOwners(c.Owners, l.Name, m.Name))
			}
		}
	}
	if lr := st.LastReload; lr != nil {
		if lr.OK {
			fmt.Fprintf(w, "last reload %s: applied %d changes\n", lr.At.Format(time.RFC3339), len(lr.Applied))
		} else {
			fmt.Fprintf(w, "last reload %s: refused, nothing changed:\n%s\n", lr.At.Format(time.RFC3339), lr.Error)
		}
	}
}

func formatOffsets(o map[int32]int64) string {
	if len(o) == 0 {
		return "-"
	}
	ps := make([]int32, 0, len(o))
	for p := range o {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%d", p, o[p])
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// planCmd prints what a reload with a config file would do now: it asks
// the running daemon, or reads the state file when none runs.
func planCmd(args []string) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "the config file to plan for")
	admin := fs.String("admin", "", "the daemon's admin address (default: the config's admin.listen)")
	out := fs.String("o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	base, cfg, err := adminURL(*admin, *path)
	if cfg == nil {
		return err // the file itself is invalid
	}
	var items []replicator.PlanItem
	source := "the running daemon at " + base
	if err == nil {
		items, err = askPlan(base, data)
	}
	if err != nil {
		var unreachable *net.OpError
		if !errors.As(err, &unreachable) && base != "" {
			return err
		}
		// No daemon: what its next start would do to the state file.
		store, serr := linkstate.Open(cfg.StateDir)
		if serr != nil {
			return fmt.Errorf("no daemon answered (%v), and the state file cannot be read: %w", err, serr)
		}
		defer store.Close()
		if items, err = replicator.PlanFromState(store, cfg); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		items = replicator.PreviewAdoptions(ctx, cfg, items, zap.NewNop())
		source = "the state file " + store.Path() + " (no daemon answered)"
	}
	if *out == "json" {
		return json.NewEncoder(os.Stdout).Encode(items)
	}
	fmt.Printf("plan for %s against %s:\n", *path, source)
	printPlan(os.Stdout, items)
	return nil
}

func askPlan(base string, data []byte) ([]replicator.PlanItem, error) {
	resp, err := adminClient.Post(base+"/plan", "application/yaml", bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("daemon at %s: %s: %s", base, resp.Status, bytes.TrimSpace(body))
	}
	var items []replicator.PlanItem
	return items, json.Unmarshal(body, &items)
}

func printPlan(w io.Writer, items []replicator.PlanItem) {
	if len(items) == 0 {
		fmt.Fprintln(w, "  no changes")
		return
	}
	for _, it := range items {
		what := "klink"
		switch {
		case it.Mirror != "":
			what = fmt.Sprintf("link %s mirror %s", it.Link, it.Mirror)
		case it.Link != "":
			what = "link " + it.Link
		}
		fmt.Fprintf(w, "  %s: %s", what, it.Action)
		if it.Detail != "" {
			fmt.Fprintf(w, " (%s)", it.Detail)
		}
		fmt.Fprintln(w)
	}
}

const netlinkUsage = `Usage:
  klink netlink serve --config FILE   run the file's network link services
  klink netlink status [flags]        network link endpoints, services and associations (--config, --admin)
`

// netlinkCmd: `klink netlink serve --config FILE` runs the file's network
// link services (a klink run whose file may have no links and no
// destination); `klink netlink status` prints the running daemon's
// endpoints, services and associations.
func netlinkCmd(args []string) error {
	if len(args) == 0 {
		return errors.New("klink netlink: serve or status")
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Print(netlinkUsage)
		return nil
	case "serve":
		return runCmd(args[1:])
	case "status":
		fs := flag.NewFlagSet("netlink status", flag.ContinueOnError)
		path := fs.String("config", config.DefaultPath, "config file (for admin.listen)")
		admin := fs.String("admin", "", "the daemon's admin address (default: the config's admin.listen)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		st, _, err := fetchStatus(*admin, *path)
		if err != nil {
			return err
		}
		printNetlinks(os.Stdout, st.NetworkLinks)
		return nil
	}
	return fmt.Errorf("klink netlink: unknown command %q (serve or status)", args[0])
}

func printNetlinks(w io.Writer, st *replicator.NetworkLinksStatus) {
	if st == nil {
		fmt.Fprintln(w, "no network links")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tSERVICE\tSTATE\tSINCE\tREASON")
	for _, e := range st.Endpoints {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, e.Service, e.State, e.Since.Format(time.RFC3339), e.Reason)
	}
	tw.Flush()
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tLISTEN\tENDPOINT\tSINCE\tBYTES")
	for _, s := range st.Services {
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\terror: %s\n", s.Name, s.Listen, s.Error)
		}
		for _, a := range s.Associations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", s.Name, s.Listen, a.Identity, a.Since.Format(time.RFC3339), a.Bytes)
		}
		if len(s.Associations) == 0 && s.Error == "" {
			fmt.Fprintf(tw, "%s\t%s\t(none)\t-\t-\n", s.Name, s.Listen)
		}
	}
	tw.Flush()
}

// printCluster shows the klink cluster as this member sees it.
func printCluster(w io.Writer, c *membership.Status) {
	lease := "held"
	if !c.LeaseValid {
		lease = "NOT HELD (appending nothing)"
	}
	fmt.Fprintf(w, "klink cluster %s  member %s  generation %d  leader %s  lease %s  config hash %s\n", c.Group, c.Member, c.Generation, dash(c.Leader), lease, c.ConfigHash)
	if c.LastHeartbeat != nil {
		fmt.Fprintf(w, "  last heartbeat %s\n", c.LastHeartbeat.Format(time.RFC3339Nano))
	}
	for _, msg := range []string{c.Refused, c.Error} {
		if msg != "" {
			fmt.Fprintf(w, "  %s\n", msg)
		}
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  MEMBER\tHOST\tSINCE\tLAST SEEN\tUNITS\tPARTITIONS\tCONFIG HASH\tREFUSED")
	for _, m := range c.Members {
		seen := "-"
		if m.LastSeen != nil {
			seen = time.Since(*m.LastSeen).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", m.Name, dash(m.Host), m.Since, seen, m.Units, m.Partitions, m.ConfigHash, dash(m.Refused))
	}
	tw.Flush()
	if len(c.Waiting) > 0 {
		fmt.Fprintf(w, "  %d units wait for a previous owner's lease to end before their first append\n", len(c.Waiting))
	}
}

// partitionOwners lists which member runs which partitions of a mirror,
// as ranges: "a: 0-8 12, b: 9-11".
func partitionOwners(owners map[string]string, link, mirror string) string {
	prefix := "part/" + link + "/" + mirror + "/"
	byOwner := map[string][]int{}
	for u, o := range owners {
		rest, ok := strings.CutPrefix(u, prefix)
		if !ok {
			continue
		}
		p, err := strconv.Atoi(rest)
		if err != nil {
			continue
		}
		if o == "" {
			o = "(moving)"
		}
		byOwner[o] = append(byOwner[o], p)
	}
	if len(byOwner) == 0 {
		return "-"
	}
	names := make([]string, 0, len(byOwner))
	for o := range byOwner {
		names = append(names, o)
	}
	sort.Strings(names)
	var parts []string
	for _, o := range names {
		ps := byOwner[o]
		sort.Ints(ps)
		var rs []string
		for i := 0; i < len(ps); {
			j := i
			for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
				j++
			}
			if i == j {
				rs = append(rs, strconv.Itoa(ps[i]))
			} else {
				rs = append(rs, fmt.Sprintf("%d-%d", ps[i], ps[j]))
			}
			i = j + 1
		}
		parts = append(parts, o+": "+strings.Join(rs, " "))
	}
	return strings.Join(parts, ", ")
}
