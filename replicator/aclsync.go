package replicator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/linkstate"
)

// ACL sync copies the source ACLs the link's aclFilters select to the
// destination, topic names mapped by the mirror prefix. ACLs klink created
// and the source no longer has are deleted; ACLs klink did not create
// (recorded in the state file) are never touched.

// syncACLs runs one round.
func (l *Link) syncACLs(ctx context.Context) SyncStatus {
	st := SyncStatus{LastSync: time.Now().UTC()}
	fail := func(err error) SyncStatus {
		st.LastError = err.Error()
		l.log.Warn("ACL sync failed; will retry", zap.Error(err))
		return st
	}
	// The source must still be the cluster the link was bound to: a
	// cluster rebuilt at the same address has none of the ACLs, and its
	// round would delete every ACL klink created.
	id, err := l.src.clusterID(ctx)
	if err != nil {
		return fail(fmt.Errorf("source: %w", err))
	}
	l.mu.Lock()
	bound := l.identity.SourceClusterID
	l.mu.Unlock()
	if bound != "" && id != bound {
		return fail(fmt.Errorf("the source now answers as cluster %q, not %q the link was bound to: ACLs left as they are", id, bound))
	}
	want := map[linkstate.ACL]bool{}
	for i, f := range l.cfg.ACLFilters {
		acls, err := describeACLs(ctx, l.src, aclFilterRequest(f))
		if err != nil {
			return fail(fmt.Errorf("aclFilters[%d]: source: %w", i, err))
		}
		for _, a := range acls {
			want[l.mapACL(a)] = true
		}
	}
	have, err := describeACLs(ctx, l.dst, anyACL())
	if err != nil {
		return fail(fmt.Errorf("destination: %w", err))
	}
	rec, err := l.store.GetLink(l.cfg.Name)
	if err != nil {
		return fail(err)
	}
	created := map[linkstate.ACL]bool{}
	for _, a := range rec.CreatedACLs {
		created[a] = true
	}
	var add, del []linkstate.ACL
	for _, a := range sortedACLs(want) {
		if !slices.Contains(have, a) {
			add = append(add, a)
		}
	}
	for _, a := range rec.CreatedACLs {
		if !want[a] {
			del = append(del, a)
		}
	}
	// Record first what klink is about to create: a crash after the
	// request leaves it marked as klink's, never a user's ACL deleted.
	for _, a := range add {
		created[a] = true
	}
	if err := l.saveCreatedACLs(created); err != nil {
		return fail(err)
	}
	if err := createACLs(ctx, l.dst, add); err != nil {
		return fail(err)
	}
	if err := deleteACLs(ctx, l.dst, del); err != nil {
		return fail(err)
	}
	for _, a := range del {
		delete(created, a)
	}
	if err := l.saveCreatedACLs(created); err != nil {
		return fail(err)
	}
	if len(add)+len(del) > 0 {
		l.log.Info("ACLs synced", zap.Int("created", len(add)), zap.Int("deleted", len(del)))
	}
	st.Synced = len(want)
	return st
}

func (l *Link) saveCreatedACLs(created map[linkstate.ACL]bool) error {
	return l.store.UpdateLink(l.cfg.Name, func(r *linkstate.Link) error {
		r.CreatedACLs = sortedACLs(created)
		return nil
	})
}

func sortedACLs(set map[linkstate.ACL]bool) []linkstate.ACL {
	out := make([]linkstate.ACL, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.SortFunc(out, cmpACL)
	return out
}

func cmpACL(a, b linkstate.ACL) int {
	return cmp.Or(cmp.Compare(a.ResourceType, b.ResourceType), cmp.Compare(a.ResourceName, b.ResourceName), cmp.Compare(a.PatternType, b.PatternType),
		cmp.Compare(a.Principal, b.Principal), cmp.Compare(a.Host, b.Host), cmp.Compare(a.Operation, b.Operation), cmp.Compare(a.Permission, b.Permission))
}

// mapACL maps a source ACL to the destination: topic resources get the
// mirror prefix (a literal "*", every topic, becomes every topic with the
// prefix).
func (l *Link) mapACL(a linkstate.ACL) linkstate.ACL {
	pre := l.cfg.MirrorTopicOptions.Prefix
	if pre == "" || a.ResourceType != int8(kmsg.ACLResourceTypeTopic) {
		return a
	}
	if a.ResourceName == "*" && a.PatternType == int8(kmsg.ACLResourcePatternTypeLiteral) {
		a.ResourceName, a.PatternType = pre, int8(kmsg.ACLResourcePatternTypePrefixed)
		return a
	}
	a.ResourceName = pre + a.ResourceName
	return a
}

// aclFilterRequest turns one aclFilters entry (validated at load) into a
// DescribeACLs filter; "*" and empty names, principals and hosts match any.
func aclFilterRequest(f config.ACLFilter) *kmsg.DescribeACLsRequest {
	req := kmsg.NewPtrDescribeACLsRequest()
	req.ResourceType, _ = kmsg.ParseACLResourceType(f.ResourceFilter.ResourceType)
	req.ResourcePatternType, _ = kmsg.ParseACLResourcePatternType(f.ResourceFilter.PatternType)
	req.Operation, _ = kmsg.ParseACLOperation(f.AccessFilter.Operation)
	req.PermissionType, _ = kmsg.ParseACLPermissionType(f.AccessFilter.PermissionType)
	anyOr := func(s string) *string {
		if s == "" || s == "*" {
			return nil
		}
		return &s
	}
	req.ResourceName = anyOr(f.ResourceFilter.Name)
	req.Principal = anyOr(f.AccessFilter.Principal)
	req.Host = anyOr(f.AccessFilter.Host)
	return req
}

// anyACL matches every ACL.
func anyACL() *kmsg.DescribeACLsRequest {
	req := kmsg.NewPtrDescribeACLsRequest()
	req.ResourceType = kmsg.ACLResourceTypeAny
	req.ResourcePatternType = kmsg.ACLResourcePatternTypeAny
	req.Operation = kmsg.ACLOperationAny
	req.PermissionType = kmsg.ACLPermissionTypeAny
	return req
}

func describeACLs(ctx context.Context, c *cluster, req *kmsg.DescribeACLsRequest) ([]linkstate.ACL, error) {
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return nil, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		if errors.Is(err, kerr.SecurityDisabled) {
			return nil, fmt.Errorf("%s cluster has no authorizer (ACLs disabled): %w", c.role, err)
		}
		return nil, err
	}
	var out []linkstate.ACL
	for _, r := range resp.Resources {
		for _, a := range r.ACLs {
			out = append(out, linkstate.ACL{ResourceType: int8(r.ResourceType), ResourceName: r.ResourceName, PatternType: int8(r.ResourcePatternType),
				Principal: a.Principal, Host: a.Host, Operation: int8(a.Operation), Permission: int8(a.PermissionType)})
		}
	}
	return out, nil
}

func createACLs(ctx context.Context, c *cluster, acls []linkstate.ACL) error {
	if len(acls) == 0 {
		return nil
	}
	req := kmsg.NewPtrCreateACLsRequest()
	for _, a := range acls {
		cr := kmsg.NewCreateACLsRequestCreation()
		cr.ResourceType, cr.ResourceName, cr.ResourcePatternType = kmsg.ACLResourceType(a.ResourceType), a.ResourceName, kmsg.ACLResourcePatternType(a.PatternType)
		cr.Principal, cr.Host, cr.Operation, cr.PermissionType = a.Principal, a.Host, kmsg.ACLOperation(a.Operation), kmsg.ACLPermissionType(a.Permission)
		req.Creations = append(req.Creations, cr)
	}
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return fmt.Errorf("destination CreateACLs: %w", err)
	}
	var errs []error
	for i, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			errs = append(errs, fmt.Errorf("destination CreateACLs %+v: %w", acls[i], err))
		}
	}
	return errors.Join(errs...)
}

func deleteACLs(ctx context.Context, c *cluster, acls []linkstate.ACL) error {
	if len(acls) == 0 {
		return nil
	}
	req := kmsg.NewPtrDeleteACLsRequest()
	for _, a := range acls {
		f := kmsg.NewDeleteACLsRequestFilter()
		name, principal, host := a.ResourceName, a.Principal, a.Host
		f.ResourceType, f.ResourceName, f.ResourcePatternType = kmsg.ACLResourceType(a.ResourceType), &name, kmsg.ACLResourcePatternType(a.PatternType)
		f.Principal, f.Host, f.Operation, f.PermissionType = &principal, &host, kmsg.ACLOperation(a.Operation), kmsg.ACLPermissionType(a.Permission)
		req.Filters = append(req.Filters, f)
	}
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return fmt.Errorf("destination DeleteACLs: %w", err)
	}
	var errs []error
	for i, r := range resp.Results {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			errs = append(errs, fmt.Errorf("destination DeleteACLs %+v: %w", acls[i], err))
		}
	}
	return errors.Join(errs...)
}
