package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	kyaml "github.com/knadh/koanf/parsers/yaml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/replicator"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// The monitoring kit the package installs under /usr/share/klink/.
var (
	rulesFile     = filepath.Join("..", "..", "systemd", "klink-rules.yml")
	rulesTestFile = filepath.Join("..", "..", "systemd", "klink-rules.test.yml")
	dashboardFile = filepath.Join("..", "..", "systemd", "klink-dashboard.json")
)

// The alert rules are valid (promtool check rules) and their unit tests
// pass (promtool test rules): every alert shown firing, with its exact
// labels and annotations, and not firing. Needs Debian's prometheus
// package (promtool); skips without it.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed: it comes with Debian's prometheus package (apt-get install prometheus)")
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// promtool does not say whether every alert is tested: each must be
	// expected firing at least once and not firing at least once.
	alerts := map[string]bool{}
	for _, r := range ruleList(t) {
		if name, _ := r["alert"].(string); name != "" {
			alerts[name] = true
		}
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, group := range yamlList(readYAML(t, rulesTestFile)["tests"]) {
		for _, c := range yamlList(group["alert_rule_test"]) {
			name, _ := c["alertname"].(string)
			if exp, _ := c["exp_alerts"].([]any); len(exp) > 0 {
				fires[name] = true
			} else {
				silent[name] = true
			}
		}
	}
	for name := range alerts {
		if !fires[name] || !silent[name] {
			t.Errorf("%s: klink-rules.test.yml must expect it firing (%v) and not firing (%v)", name, fires[name], silent[name])
		}
	}
	if len(alerts) < 7 {
		t.Errorf("only %d alerts in %s", len(alerts), rulesFile)
	}
}

// Every metric the dashboard's queries and the alert rules name is one
// klink exports. The exported names come from the collectors the admin
// listener registers (their descriptors, which name every family, even
// one with no series yet), checked against what a running klink's
// /metrics really serves.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	exported, histograms := describedMetrics(t)

	// The check can fail: an unknown name, and a histogram suffix on a
	// metric that is no histogram, are reported.
	if got := unexported([]string{"klink_no_such_metric_total", "klink_mirror_lag_records_bucket", "klink_fetch_duration_seconds_bucket", "klink_mirror_state"}, exported, histograms); !slices.Equal(got, []string{"klink_mirror_lag_records_bucket", "klink_no_such_metric_total"}) {
		t.Fatalf("the check reports %v for two unknown names", got)
	}

	// What a running klink serves is among the described metrics (else
	// describedMetrics no longer matches admin.go), with the same types.
	served := scrapeRunningKlink(t)
	for name, typ := range served {
		if !exported[name] {
			t.Errorf("klink serves %s, which describedMetrics does not know: make it register what startAdmin registers", name)
		}
		if (typ == "histogram") != histograms[name] {
			t.Errorf("klink serves %s as a %s", name, typ)
		}
	}

	dash := dashboardQueries(t)
	if len(dash) < 20 {
		t.Fatalf("only %d queries found in the dashboard", len(dash))
	}
	var rules []string
	for _, r := range ruleList(t) {
		expr, _ := r["expr"].(string)
		if expr == "" {
			t.Fatalf("a rule without expr: %v", r)
		}
		rules = append(rules, expr)
	}
	for what, exprs := range map[string][]string{"the dashboard": dash, "the alert rules": rules} {
		names := metricNames(exprs)
		if bad := unexported(names, exported, histograms); len(bad) > 0 {
			t.Errorf("%s names metrics klink does not export: %v", what, bad)
		}
		var notServed []string
		for _, n := range names {
			if _, ok := served[histogramBase(n, histograms)]; !ok {
				notServed = append(notServed, n)
			}
		}
		t.Logf("%s: %d klink metrics; not served by this small klink (no series yet): %v", what, len(names), notServed)
	}
	// The panels the dashboard is there for.
	names := metricNames(dash)
	for _, want := range []string{"klink_mirror_bytes_total", "klink_mirror_records_total", "klink_mirror_lag_records", "klink_mirror_lag_seconds",
		"klink_mirror_state", "klink_link_state", "klink_fetch_duration_seconds_bucket", "klink_produce_duration_seconds_bucket",
		"klink_mirror_filler_offsets_total", "klink_sync_last_timestamp_seconds", "klink_sync_error", "klink_errors_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
}

// describedMetrics is every metric name the admin listener's registry
// holds (as startAdmin registers them: the status collector and the
// replicator's instruments), and which of them are histograms.
func describedMetrics(t *testing.T) (names, histograms map[string]bool) {
	t.Helper()
	names, histograms = map[string]bool{}, map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range append([]prometheus.Collector{statusCollector{}}, replicator.Collectors()...) {
		ch := make(chan *prometheus.Desc)
		go func() {
			c.Describe(ch)
			close(ch)
		}()
		_, isHistogram := c.(*prometheus.HistogramVec)
		if _, ok := c.(prometheus.Histogram); ok {
			isHistogram = true
		}
		for d := range ch {
			m := fq.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names[m[1]] = true
			histograms[m[1]] = isHistogram
		}
	}
	if len(names) < 20 || !names["klink_mirror_state"] || !names["klink_fetch_duration_seconds"] || !histograms["klink_fetch_duration_seconds"] {
		t.Fatalf("described metrics look wrong: %v", names)
	}
	return names, histograms
}

// histogramBase strips _bucket, _sum or _count from a histogram's series.
func histogramBase(name string, histograms map[string]bool) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && histograms[base] {
			return base
		}
	}
	return name
}

// unexported lists, sorted, the names that are neither an exported
// metric nor a series of an exported histogram.
func unexported(names []string, exported, histograms map[string]bool) []string {
	var bad []string
	for _, n := range names {
		if !exported[histogramBase(n, histograms)] {
			bad = append(bad, n)
		}
	}
	sort.Strings(bad)
	return bad
}

var klinkMetric = regexp.MustCompile(`klink_[a-z_]+`)

// metricNames lists, sorted and once each, the klink_ names in exprs.
func metricNames(exprs []string) []string {
	var names []string
	for _, e := range exprs {
		names = append(names, klinkMetric.FindAllString(e, -1)...)
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// dashboardQueries is every panel target's expr (rows' panels included)
// and every template variable's query, in the dashboard file.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr       string `json:"expr"`
		RefID      string `json:"refId"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Type    string   `json:"type"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var dash struct {
		Inputs []struct {
			Name     string `json:"name"`
			PluginID string `json:"pluginId"`
		} `json:"__inputs"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string          `json:"name"`
				Definition string          `json:"definition"`
				Query      json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if len(dash.Inputs) != 1 || dash.Inputs[0].Name != "DS_PROMETHEUS" || dash.Inputs[0].PluginID != "prometheus" || dash.SchemaVersion < 36 {
		t.Fatalf("dashboard inputs %+v, schemaVersion %d", dash.Inputs, dash.SchemaVersion)
	}
	var exprs []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.Datasource.UID != "${DS_PROMETHEUS}" {
					t.Errorf("panel %q target %s: expr %q, datasource %q", p.Title, tg.RefID, tg.Expr, tg.Datasource.UID)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		exprs = append(exprs, v.Definition)
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) == nil {
			exprs = append(exprs, q.Query)
		} else {
			var s string
			if json.Unmarshal(v.Query, &s) == nil {
				exprs = append(exprs, s)
			}
		}
	}
	if !vars["link"] || !vars["mirror"] {
		t.Errorf("template variables %v: want link and mirror", vars)
	}
	return exprs
}

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := kyaml.Parser().Unmarshal(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func yamlList(v any) []map[string]any {
	l, _ := v.([]any)
	var out []map[string]any
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// ruleList is every rule of the rules file.
func ruleList(t *testing.T) []map[string]any {
	t.Helper()
	var rules []map[string]any
	for _, g := range yamlList(readYAML(t, rulesFile)["groups"]) {
		rules = append(rules, yamlList(g["rules"])...)
	}
	if len(rules) == 0 {
		t.Fatalf("no rules in %s", rulesFile)
	}
	return rules
}

// scrapeRunningKlink runs klink mirroring one topic between two kfake
// clusters and returns the klink_ families its /metrics serves, by type.
func scrapeRunningKlink(t *testing.T) map[string]string {
	t.Helper()
	src, dst, adm := clusterPair(t, kafkatest.KFake, kafkatest.Brokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "scraped"); err != nil {
		t.Fatal(err)
	}
	cl := produceClient(t, src)
	produceN(ctx, t, cl, "scraped", 10)
	dir := t.TempDir()
	path := filepath.Join(dir, "klink.yaml")
	reloadConfig(t, path, filepath.Join(dir, "state"), src, dst, "", [2]string{"scraped", ""})
	_, logs := startKlinkLogged(t, "run", "--config", path)
	addr := adminAddress(t, logs)
	served := map[string]string{}
	typeLine := regexp.MustCompile(`(?m)^# TYPE (klink_\S+) (\S+)$`)
	// Until the data path's instruments have series: a fetch and a
	// produce answered.
	waitUntil(t, 30*time.Second, "klink's /metrics to show fetches and produces", func() bool {
		_, body := httpGet(t, "http://"+addr+"/metrics")
		for _, m := range typeLine.FindAllStringSubmatch(body, -1) {
			served[m[1]] = m[2]
		}
		return served["klink_fetch_duration_seconds"] != "" && served["klink_produce_duration_seconds"] != "" && served["klink_mirror_state"] != ""
	})
	return served
}

func produceClient(t *testing.T, c *kafkatest.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produceN(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "%s %d", topic, i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// alertingConfig is klink's file for TestPrometheusAlertFiresAndResolves:
// one link, mirrors "fails" and "steady"; a short retry timeout so that a
// stopped source shows LINK_FAILED within seconds.
func alertingConfig(t *testing.T, path, stateDir string, src, dst *kafkatest.Cluster, failsState string) {
	t.Helper()
	cfg := fmt.Sprintf(`stateDir: %s
admin: {listen: "127.0.0.1:0"}
log: {level: info, format: json}
destination:
  bootstrap: [%q]
links:
  - name: alerting
    source: {bootstrap: [%q]}
    configs: {cluster.link.retry.timeout.ms: 1000}
    mirrorTopics:
      - {name: fails, state: %s}
      - {name: steady}
`, stateDir, dst.ListenAddrs()[0], src.ListenAddrs()[0], failsState)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// promAlert is an alert as Prometheus' /api/v1/alerts shows it.
type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

// prometheusServer is a Prometheus started by a test.
type prometheusServer struct {
	base string // http://127.0.0.1:PORT
}

// startPrometheus runs Prometheus scraping klink's admin address every
// second, with the rules file's alerts, on a free loopback port below
// 32768 (not an ephemeral port another connection may take). It is killed
// when the test ends.
//
// The rules are klink-rules.yml with every `for:` rewritten to 1s: the
// expressions, labels and annotations are the shipped ones, only the
// waiting is shortened so that the test takes seconds, not minutes.
func startPrometheus(t *testing.T, bin, klinkAddr string) *prometheusServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	forLine := regexp.MustCompile(`(?m)^([ \t]+for:[ \t]*)\S+[ \t]*$`)
	if n, alerts := len(forLine.FindAll(rules, -1)), strings.Count(string(rules), "- alert:"); n != alerts {
		t.Fatalf("%d for: lines for %d alerts in %s", n, alerts, rulesFile)
	}
	rules = forLine.ReplaceAll(rules, []byte("${1}1s"))
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
scrape_configs:
  - job_name: klink
    static_configs:
      - targets: [%q]
`, klinkAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		p, retry := runPrometheus(t, bin, dir, attempt)
		if p != nil {
			return p
		}
		if !retry || attempt == 3 {
			t.Fatal("prometheus did not start")
		}
	}
}

// runPrometheus starts Prometheus with dir's config on a random free port
// below 32768 and waits until it is ready; retry says it lost a race for
// the port.
func runPrometheus(t *testing.T, bin, dir string, attempt int) (p *prometheusServer, retry bool) {
	t.Helper()
	port := 0
	for port == 0 {
		n := 10000 + rand.IntN(22000)
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", n)); err == nil {
			ln.Close()
			port = n
		}
	}
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", attempt)),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	p = &prometheusServer{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			if strings.Contains(logs.String(), "address already in use") {
				return nil, true
			}
			t.Fatalf("prometheus exited:\n%s", logs.String())
		default:
		}
		if code, _, err := httpGetErr(p.base + "/-/ready"); err == nil && code == http.StatusOK {
			return p, false
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// api GETs a Prometheus API path and decodes its data into v.
func (p *prometheusServer) api(t *testing.T, path string, v any) error {
	t.Helper()
	code, body, err := httpGetErr(p.base + path)
	if err != nil {
		return err
	}
	var resp struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("%s: %d %s", path, code, body)
	}
	if resp.Status != "success" {
		return fmt.Errorf("%s: %s", path, resp.Error)
	}
	return json.Unmarshal(resp.Data, v)
}

func (p *prometheusServer) alerts(t *testing.T) []promAlert {
	t.Helper()
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := p.api(t, "/api/v1/alerts", &data); err != nil {
		t.Fatal(err)
	}
	return data.Alerts
}

// query is an instant query's vector, as label sets with their value.
func (p *prometheusServer) query(t *testing.T, q string) ([]map[string]string, error) {
	t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.api(t, "/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	var out []map[string]string
	for _, r := range data.Result {
		m := r.Metric
		if m == nil {
			m = map[string]string{}
		}
		m["__value__"], _ = r.Value[1].(string)
		out = append(out, m)
	}
	return out, nil
}

// mirrorAlert finds the KlinkMirrorNotActive alert of a mirror (any
// state: pending or firing), or nil.
func mirrorAlert(alerts []promAlert, topic string) *promAlert {
	for i, a := range alerts {
		if a.Labels["alertname"] == "KlinkMirrorNotActive" && a.Labels["topic"] == topic {
			return &alerts[i]
		}
	}
	return nil
}

// A real Prometheus (Debian's package) scrapes a running klink with the
// shipped rules: no alert while every mirror is ACTIVE; KlinkMirrorNotActive
// fires for a mirror that FAILED (someone wrote into its destination
// topic) and resolves once it is failed over (STOPPED); it fires again for
// a mirror whose source cluster went away (LINK_FAILED) and resolves when
// the source is back and the mirror ACTIVE again. Every dashboard query
// is also run against it (it must parse). Skips without prometheus.
func TestPrometheusAlertFiresAndResolves(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed: it comes with Debian's prometheus package (apt-get install prometheus)")
	}
	start := time.Now()
	src := kafkatest.Start(t, kafkatest.KFake, "source", kafkatest.Brokers(1), kafkatest.Restartable())
	dst := kafkatest.Start(t, kafkatest.KFake, "destination", kafkatest.Brokers(1), kafkatest.Strict())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := src.Admin(t).CreateTopics(ctx, 1, 1, nil, "fails", "steady"); err != nil {
		t.Fatal(err)
	}
	srcCl := produceClient(t, src)
	produceN(ctx, t, srcCl, "fails", 5)
	produceN(ctx, t, srcCl, "steady", 5)

	dir := t.TempDir()
	path, state := filepath.Join(dir, "klink.yaml"), filepath.Join(dir, "state")
	alertingConfig(t, path, state, src, dst, "ACTIVE")
	cmd, logs := startKlinkLogged(t, "run", "--config", path)
	addr := adminAddress(t, logs)
	waitMirrors := func(limit time.Duration, want map[string]string) {
		t.Helper()
		waitUntil(t, limit, fmt.Sprintf("mirrors %v", want), func() bool {
			s := klinkStatus(t, addr)
			for name, st := range want {
				if mirrorState(s, name) != st {
					return false
				}
			}
			return true
		})
	}
	waitMirrors(30*time.Second, map[string]string{"fails": "ACTIVE", "steady": "ACTIVE"})

	prom := startPrometheus(t, bin, addr)
	waitFor := func(limit time.Duration, what string, ok func([]promAlert) bool) {
		t.Helper()
		var last []promAlert
		deadline := time.Now().Add(limit)
		for {
			last = prom.alerts(t)
			if ok(last) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("waited %s for %s; alerts: %+v", limit, what, last)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	waitUntil(t, 20*time.Second, "Prometheus to scrape both mirrors ACTIVE", func() bool {
		r, err := prom.query(t, `klink_mirror_state{job="klink",state="ACTIVE"} == 1`)
		return err == nil && len(r) == 2
	})
	t0 := time.Now()

	// Every dashboard query parses (Grafana's variables filled in).
	fill := strings.NewReplacer(`"$job"`, `"klink"`, `"$instance"`, `".*"`, `"$link"`, `".*"`, `"$mirror"`, `".*"`, "$__rate_interval", "1m")
	for _, q := range dashboardQueries(t) {
		if strings.HasPrefix(q, "label_values(") {
			continue // Grafana's, not PromQL
		}
		if _, err := prom.query(t, fill.Replace(q)); err != nil {
			t.Errorf("dashboard query %s: %v", q, err)
		}
	}

	// Every mirror ACTIVE for a few evaluations: no alert at all.
	time.Sleep(3 * time.Second)
	for q, want := range map[string]int{`klink_mirror_records_total{job="klink"} == 5`: 2, `klink_mirror_bytes_total{job="klink"} > 0`: 2,
		`klink_produce_duration_seconds_count{job="klink"} > 0`: 1} {
		if r, err := prom.query(t, q); err != nil || len(r) != want {
			t.Errorf("%s: %v %v (want %d series)", q, r, err, want)
		}
	}
	if a := prom.alerts(t); len(a) != 0 {
		t.Fatalf("alerts with every mirror ACTIVE: %+v", a)
	}

	// Someone writes into the destination topic: klink's next append
	// lands on another offset than its source offset, the mirror FAILS.
	dstCl := produceClient(t, dst)
	produceN(ctx, t, dstCl, "fails", 1)
	produceN(ctx, t, srcCl, "fails", 1)
	waitMirrors(30*time.Second, map[string]string{"fails": "FAILED"})
	t1 := time.Now()
	waitFor(30*time.Second, "KlinkMirrorNotActive firing for mirror fails", func(as []promAlert) bool {
		a := mirrorAlert(as, "fails")
		return a != nil && a.State == "firing"
	})
	a := mirrorAlert(prom.alerts(t), "fails")
	if a == nil || a.Labels["state"] != "FAILED" || a.Labels["link"] != "alerting" || a.Labels["severity"] != "critical" || a.Labels["job"] != "klink" || a.Labels["instance"] != addr ||
		a.Annotations["summary"] != "Mirror fails of link alerting is FAILED, not ACTIVE" ||
		!strings.HasPrefix(a.Annotations["description"], "klink stopped mirroring into fails because") || !strings.Contains(a.Annotations["description"], "klink status` on "+addr) {
		t.Fatalf("the alert: %+v", a)
	}
	if mirrorAlert(prom.alerts(t), "steady") != nil {
		t.Fatal("an alert for the ACTIVE mirror steady")
	}
	t.Logf("FAILED: alert firing %s after the mirror failed", time.Since(t1).Round(100*time.Millisecond))

	// The operator fails it over (the runbook in the description): the
	// mirror is STOPPED, an ordinary topic, and the alert resolves.
	alertingConfig(t, path, state, src, dst, "FAILOVER")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMirrors(30*time.Second, map[string]string{"fails": "STOPPED"})
	t2 := time.Now()
	waitFor(30*time.Second, "the alert of mirror fails to resolve", func(as []promAlert) bool {
		return len(as) == 0
	})
	t.Logf("FAILOVER: alert gone %s after the mirror stopped", time.Since(t2).Round(100*time.Millisecond))

	// The source cluster goes away: mirror steady LINK_FAILED, the alert
	// fires; the source is back, the mirror ACTIVE, the alert resolves.
	src.Stop(t)
	waitMirrors(30*time.Second, map[string]string{"steady": "LINK_FAILED"})
	t3 := time.Now()
	waitFor(30*time.Second, "KlinkMirrorNotActive firing for mirror steady", func(as []promAlert) bool {
		a := mirrorAlert(as, "steady")
		return a != nil && a.State == "firing" && a.Labels["state"] == "LINK_FAILED" &&
			strings.HasPrefix(a.Annotations["description"], "The source cluster of link alerting has not answered")
	})
	t.Logf("LINK_FAILED: alert firing %s after the mirror showed it", time.Since(t3).Round(100*time.Millisecond))
	src.Restart(t)
	waitMirrors(60*time.Second, map[string]string{"steady": "ACTIVE"})
	t4 := time.Now()
	waitFor(30*time.Second, "the alert of mirror steady to resolve", func(as []promAlert) bool {
		return mirrorAlert(as, "steady") == nil
	})
	t.Logf("ACTIVE again: alert gone %s after; Prometheus part %s, whole test %s", time.Since(t4).Round(100*time.Millisecond),
		time.Since(t0).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	// Whatever else the outage set off (a sync round that failed while
	// the source was away: KlinkSyncError) resolves too.
	waitFor(20*time.Second, "every alert to resolve", func(as []promAlert) bool { return len(as) == 0 })
}
