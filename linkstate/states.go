package linkstate

import (
	"fmt"
	"time"
)

// MirrorState is where a mirror topic is in its life.
type MirrorState string

const (
	// Pending: being set up (source topic looked up, destination topic
	// created, partitions aligned to the start offset).
	Pending MirrorState = "PENDING"
	// Active: mirroring.
	Active MirrorState = "ACTIVE"
	// Paused: not fetching; everything is kept, and ACTIVE goes on from
	// where it stopped.
	Paused MirrorState = "PAUSED"
	// PendingStopped: a promote is waiting for the mirror to catch up
	// with the source before it stops.
	PendingStopped MirrorState = "PENDING_STOPPED"
	// Stopped: promoted or failed over. The destination topic is an
	// ordinary topic; klink never writes into it again.
	Stopped MirrorState = "STOPPED"
	// SourceUnavailable: the source topic is gone; mirroring goes on if a
	// topic of the same identity comes back.
	SourceUnavailable MirrorState = "SOURCE_UNAVAILABLE"
	// LinkFailed: the source cluster has been unreachable for longer than
	// the link's retry timeout; mirroring goes on when it is back.
	LinkFailed MirrorState = "LINK_FAILED"
	// Failed: stopped because continuing could corrupt the mirror (an
	// offset mismatch, a destination topic klink did not create, a
	// destination that disagrees with the source). Reason says what
	// happened; klink writes nothing more into the topic.
	Failed MirrorState = "FAILED"
)

// States lists every mirror state.
var States = []MirrorState{Pending, Active, Paused, PendingStopped, Stopped, SourceUnavailable, LinkFailed, Failed}

// Desired is what the config asks of a mirror (mirrorTopics[].state), or
// Removed when the mirror left the config.
type Desired string

const (
	WantActive   Desired = "ACTIVE"
	WantPause    Desired = "PAUSE"
	WantPromote  Desired = "PROMOTE"
	WantFailover Desired = "FAILOVER"
	// Removed: the mirror is no longer in the config. It is failed over:
	// the destination topic stays, as an ordinary topic.
	Removed Desired = "REMOVED"
)

// DesiredStates lists every desired state.
var DesiredStates = []Desired{WantActive, WantPause, WantPromote, WantFailover, Removed}

// Action is what klink does to bring a mirror from its state to the one
// desired.
type Action string

const (
	// Keep: nothing to do (already there, or on its way: a mirror being
	// set up, or waiting for its source, goes on by itself).
	Keep     Action = "keep"
	Pause    Action = "pause"
	Resume   Action = "resume"
	Promote  Action = "promote"
	Failover Action = "failover"
	// Refuse: the change cannot be made; the error says why and what to
	// do instead. The mirror stays as it is.
	Refuse Action = "refuse"
)

// Decide turns a mirror's state and the state desired for it into the
// action that brings it there, or refuses it with a reason an operator can
// act on. stoppedAt is when a STOPPED mirror stopped.
func Decide(name string, cur MirrorState, want Desired, stoppedAt time.Time) (Action, error) {
	switch cur {
	case Stopped:
		switch want {
		case WantPromote, WantFailover, Removed:
			return Keep, nil
		}
		return Refuse, fmt.Errorf("mirror %s was stopped (promoted or failed over) at %s and is an ordinary topic now: klink never writes into it again; remove it from mirrorTopics, or mirror into a destination topic with a new name", name, stoppedAt.Format(time.RFC3339))
	case Failed:
		switch want {
		case WantFailover, Removed:
			return Failover, nil
		case WantPromote:
			return Refuse, fmt.Errorf("mirror %s is FAILED and cannot catch up with its source, so it cannot be promoted; use state FAILOVER to keep the destination topic as it is (an ordinary topic), or remove the mirror from mirrorTopics", name)
		}
		return Refuse, fmt.Errorf("mirror %s is FAILED and klink does not write into it again: read its reason; then use state FAILOVER (or remove it from mirrorTopics) to keep the topic as it is, an ordinary topic; to mirror it again, mirror into a destination topic with a new name", name)
	}
	switch want {
	case WantActive:
		if cur == Paused || cur == PendingStopped {
			return Resume, nil
		}
		return Keep, nil
	case WantPause:
		if cur == Paused {
			return Keep, nil
		}
		return Pause, nil
	case WantPromote:
		if cur == PendingStopped {
			return Keep, nil
		}
		return Promote, nil
	case WantFailover, Removed:
		return Failover, nil
	}
	return Refuse, fmt.Errorf("mirror %s: unknown desired state %q (want ACTIVE, PAUSE, PROMOTE or FAILOVER)", name, want)
}

// transitions lists, per state, the states it may move to.
var transitions = map[MirrorState][]MirrorState{
	Pending:           {Active, Paused, PendingStopped, Stopped, SourceUnavailable, LinkFailed, Failed},
	Active:            {Paused, PendingStopped, Stopped, SourceUnavailable, LinkFailed, Failed},
	Paused:            {Active, PendingStopped, Stopped, Failed},
	PendingStopped:    {Active, Paused, Stopped, Failed},
	SourceUnavailable: {Active, Paused, PendingStopped, Stopped, LinkFailed, Failed},
	LinkFailed:        {Active, Paused, PendingStopped, Stopped, SourceUnavailable, Failed},
	Failed:            {Stopped},
	Stopped:           {},
}

// Transition reports whether a mirror may move from one state to another,
// and if not, why.
func Transition(from, to MirrorState) error {
	if from == to {
		return nil
	}
	next, known := transitions[from]
	if !known {
		return fmt.Errorf("unknown mirror state %q", from)
	}
	for _, s := range next {
		if s == to {
			return nil
		}
	}
	switch from {
	case Failed:
		return fmt.Errorf("a FAILED mirror stays FAILED (or is failed over): it is not written into again; inspect the reason, then fail it over, or remove the mirror and give it a new destination topic")
	case Stopped:
		return fmt.Errorf("a STOPPED mirror stays STOPPED: its destination topic is an ordinary topic now")
	}
	return fmt.Errorf("a %s mirror cannot become %s", from, to)
}
