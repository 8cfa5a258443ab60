package kafkatest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Clusters a user runs ($KLINK_TEST_SOURCE, $KLINK_TEST_DESTINATION) are
// shared by every test: one test at a time uses them, across test
// processes too (a file lock), and each test deletes the topics it made.

var externalLock struct {
	sync.Mutex
	held int
	f    *os.File
}

func lockExternal(t testing.TB) {
	t.Helper()
	externalLock.Lock()
	defer externalLock.Unlock()
	if externalLock.held == 0 {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "klink-kafkatest-external.lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			t.Fatal(err)
		}
		externalLock.f = f
	}
	externalLock.held++
}

func unlockExternal() {
	externalLock.Lock()
	defer externalLock.Unlock()
	if externalLock.held--; externalLock.held == 0 {
		externalLock.f.Close() // releases the lock
		externalLock.f = nil
	}
}

// useExternal points the cluster at the user's source or destination.
func (c *Cluster) useExternal(t testing.TB) {
	t.Helper()
	if c.o.secure() || c.o.brokers > 1 || len(c.o.brokerConf) > 0 || c.o.restartable {
		RequireManaged(t) // skips
	}
	env := EnvSource
	switch c.name {
	case "source":
	case "destination":
		env = EnvDestination
	default:
		RequireManaged(t)
	}
	for _, a := range strings.Split(os.Getenv(env), ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.addrs = append(c.addrs, a)
		}
	}
	lockExternal(t)
	adm := c.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := adm.ListTopics(ctx)
	if err != nil {
		unlockExternal()
		t.Fatalf("%s (%s=%s): %v", c.name, env, os.Getenv(env), err)
	}
	t.Cleanup(func() {
		defer unlockExternal()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		now, err := adm.ListTopics(ctx)
		if err != nil {
			t.Logf("%s: listing topics to delete the test's: %v", c.name, err)
			return
		}
		// By topic ID: a topic the previous test deleted can still be
		// listed under its name when this one starts.
		var made []string
		for _, topic := range now.Names() {
			if !before.Has(topic) || before[topic].ID != now[topic].ID {
				made = append(made, topic)
			}
		}
		if len(made) == 0 {
			return
		}
		resp, err := adm.DeleteTopics(ctx, made...)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Logf("%s: deleting the test's topics %v: %v", c.name, made, err)
			return
		}
		// The next test may create the same names: wait until they are gone.
		for ctx.Err() == nil {
			now, err := adm.ListTopics(ctx)
			if err == nil && !slices.ContainsFunc(made, now.Has) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("%s: the test's topics %v were still there after 60 s", c.name, made)
	})
}
