package linkstate

import "fmt"

// MirrorState is where a mirror topic is in its life.
type MirrorState string

// The states built so far. PAUSED, PENDING_STOPPED, STOPPED,
// SOURCE_UNAVAILABLE and LINK_FAILED come with link control.
const (
	// Pending: being set up (source topic looked up, destination topic
	// created, partitions aligned to the start offset).
	Pending MirrorState = "PENDING"
	// Active: mirroring.
	Active MirrorState = "ACTIVE"
	// Failed: stopped because continuing could corrupt the mirror (an
	// offset mismatch, a destination topic klink did not create, a
	// destination that disagrees with the source). Reason says what
	// happened; klink writes nothing more into the topic.
	Failed MirrorState = "FAILED"
)

// transitions lists, per state, the states it may move to.
var transitions = map[MirrorState][]MirrorState{
	Pending: {Active, Failed},
	Active:  {Failed},
	Failed:  {},
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
	if from == Failed {
		return fmt.Errorf("a FAILED mirror stays FAILED: it is not written into again; inspect the reason, then remove the mirror from the config or give it a new destination topic")
	}
	return fmt.Errorf("a %s mirror cannot become %s", from, to)
}
