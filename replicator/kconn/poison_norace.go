//go:build !race

package kconn

const poisonReleased = false
