package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
	"github.com/klink-io/klink/replicator"
)

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "config file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file (for performance work)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer log.Sync()
	return runDaemon(cfg, *path, log)
}

// runDaemon runs the links of cfg until SIGTERM or SIGINT; SIGHUP re-reads
// the file at path and applies the difference (path "" : no reloads).
func runDaemon(cfg *config.Config, path string, log *zap.Logger) error {
	var store linkstate.Store
	var member *replicator.ClusterMember
	if cfg.Cluster.Enabled() {
		// A klink cluster member: its state is the shared state topic.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var err error
		member, err = replicator.JoinCluster(ctx, cfg, log)
		cancel()
		if err != nil {
			return fmt.Errorf("joining klink cluster %s: %w", cfg.Cluster.Group, err)
		}
		defer member.Close()
		store = member.Store
	} else {
		file, err := linkstate.Open(cfg.StateDir)
		if err != nil {
			return err
		}
		defer file.Close()
		store = file
	}

	r := replicator.New(cfg, store, log)
	if member != nil {
		member.Serve(r)
	}
	admin, err := startAdmin(cfg.Admin, r, log)
	if err != nil {
		return err
	}
	defer admin.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		r.Run(ctx)
		close(done)
	}()
	log.Info("klink started", zap.String("version", version), zap.Int("links", len(cfg.Links)), zap.String("stateFile", store.Path()))
	notify, err := newNotifier()
	if err != nil {
		log.Warn("systemd notifications off", zap.Error(err))
		notify = &notifier{}
	}
	defer notify.close()
	notify.send("READY=1", status(summary(r.Status())))
	// The main loop pings the watchdog (when systemd asks for one) and
	// refreshes the status line; a stuck loop stops the pings.
	every := 10 * time.Second
	if notify.watchdog > 0 {
		every = min(every, notify.watchdog)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case <-done:
			return errors.New("all links stopped")
		case <-tick.C:
			lines := []string{status(summary(r.Status()))}
			if notify.watchdog > 0 {
				lines = append(lines, "WATCHDOG=1")
			}
			notify.send(lines...)
		case s := <-sigs:
			if s == syscall.SIGHUP {
				notify.send(reloading()...)
				reload(r, path, log)
				notify.send("READY=1", status(summary(r.Status())))
				continue
			}
			log.Info("stopping: no more fetches; letting appends in flight finish", zap.String("signal", s.String()))
			notify.send("STOPPING=1", status("stopping: letting appends in flight finish"))
			cancel()
			select {
			case <-done:
				log.Info("klink stopped")
				return nil
			case <-time.After(config.ShutdownTimeout + 5*time.Second):
				return fmt.Errorf("links did not stop within %s", config.ShutdownTimeout+5*time.Second)
			case s := <-sigs:
				return fmt.Errorf("stopped by a second %s before appends finished", s)
			}
		}
	}
}

// logLevel is the running logger's level: a reload changes it at once.
var logLevel = zap.NewAtomicLevel()

// newLogger builds zap from the log section.
func newLogger(c config.Log) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	zc := zap.NewProductionConfig()
	logLevel.SetLevel(level)
	zc.Level = logLevel
	zc.Encoding = c.Format
	zc.Sampling = nil
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	if c.Format == "console" {
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	}
	zc.DisableStacktrace = true
	return zc.Build()
}

// reload re-reads and validates the whole config file and applies the
// difference. An invalid file changes nothing: the running config stays,
// and the error (naming the key path) is logged and shown in /status.
func reload(r *replicator.Replicator, path string, log *zap.Logger) {
	if path == "" {
		log.Warn("SIGHUP received: this klink runs without a config file; nothing to reload")
		return
	}
	log.Info("SIGHUP received: reloading the config", zap.String("config", path))
	cfg, err := config.Load(path)
	if err != nil {
		r.NoteReloadError(err)
		log.Error("config reload refused: the running config stays", zap.Error(err))
		return
	}
	res := r.Reload(cfg)
	if lvl, err := zapcore.ParseLevel(cfg.Log.Level); err == nil && lvl != logLevel.Level() {
		log.Info("log level changed", zap.Stringer("from", logLevel.Level()), zap.Stringer("to", lvl))
		logLevel.SetLevel(lvl)
	}
	if len(res.Applied) == 0 {
		log.Info("config reloaded: nothing changed")
	}
	for _, a := range res.Applied {
		log.Info("config reloaded", zap.String("applied", a))
	}
	for _, n := range res.NotApplied {
		log.Warn("config reloaded; not applied until restart", zap.String("change", n))
	}
}

// summary is klink's state in one line, for systemd's status.
func summary(st replicator.Status) string {
	running, mirrors, lag := 0, map[string]int{}, int64(0)
	for _, l := range st.Links {
		if l.State == replicator.LinkRunning {
			running++
		}
		for _, m := range l.Mirrors {
			mirrors[m.State]++
			lag += m.Lag
		}
	}
	var parts []string
	for _, s := range []string{"ACTIVE", "PENDING", "PAUSED", "PENDING_STOPPED", "STOPPED", "SOURCE_UNAVAILABLE", "LINK_FAILED", "FAILED"} {
		if mirrors[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", mirrors[s], s))
		}
	}
	if len(parts) == 0 {
		parts = []string{"no mirrors"}
	}
	return fmt.Sprintf("%d of %d links running; mirrors: %s; lag %d records", running, len(st.Links), strings.Join(parts, ", "), lag)
}
