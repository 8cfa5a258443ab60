package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminServer serves GET /status (JSON) and GET /healthz.
type adminServer struct {
	srv *http.Server
	ln  net.Listener
}

func startAdmin(admin config.Admin, r *replicator.Replicator, log *zap.Logger) (*adminServer, error) {
	listen := admin.Listen
	if listen == "off" {
		return &adminServer{}, nil
	}
	mux := http.NewServeMux()
	reg := prometheus.NewRegistry()
	reg.MustRegister(statusCollector{status: r.Status, partitions: admin.PartitionMetrics == nil || *admin.PartitionMetrics},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(replicator.Collectors()...)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// /readyz: every link started and none LINK_FAILED (for probes and
	// load balancers); /healthz: the process answers.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		var problems []string
		for _, l := range r.Status().Links {
			switch l.State {
			case replicator.LinkRunning, replicator.LinkRemoved:
			default:
				problems = append(problems, fmt.Sprintf("link %s is %s: %s", l.Name, l.State, l.Error))
			}
			for _, m := range l.Mirrors {
				if m.State == "LINK_FAILED" {
					problems = append(problems, fmt.Sprintf("link %s mirror %s is LINK_FAILED: %s", l.Name, m.Name, m.Reason))
				}
			}
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(problems, "\n"))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r.Status()); err != nil {
			log.Debug("writing status", zap.Error(err))
		}
	})
	// POST /plan takes a config file's YAML and answers what a reload
	// with it would do now (klink plan); nothing is applied.
	mux.HandleFunc("POST /plan", func(w http.ResponseWriter, req *http.Request) {
		data, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		cfg, err := config.Parse(data)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
		defer cancel()
		items := replicator.PreviewAdoptions(ctx, cfg, r.Plan(cfg), log)
		if err := json.NewEncoder(w).Encode(items); err != nil {
			log.Debug("writing plan", zap.Error(err))
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %s: %w", listen, err)
	}
	s := &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	log.Info("admin listener", zap.String("address", ln.Addr().String()))
	return s, nil
}

// Addr is the listener's address ("" when off).
func (s *adminServer) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

func (s *adminServer) Close() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}
