//go:build race

package kconn

const poisonReleased = true
