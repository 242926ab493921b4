package agent

import (
	"crypto/rand"
	"encoding/hex"
	"math/big"
)

// newID returns a container ID: 64 random hex digits, as Docker's.
func newID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // the kernel's RNG does not fail
	}
	return hex.EncodeToString(b[:])
}

// Name parts for generated container names ("brave_lovelace"), like
// Docker's: adjectives and people of computing and science.
var (
	nameLeft = []string{
		"admiring", "agile", "amazing", "bold", "brave", "busy", "calm", "clever", "cool", "crisp",
		"dazzling", "eager", "ecstatic", "elegant", "epic", "fervent", "focused", "friendly", "gallant", "gentle",
		"happy", "hopeful", "jolly", "keen", "kind", "lucid", "modest", "nifty", "noble", "patient",
		"peaceful", "quirky", "relaxed", "serene", "sharp", "stoic", "sweet", "tender", "upbeat", "vibrant",
		"wizardly", "youthful", "zealous", "zen", "quiet", "nimble", "steady", "sunny", "witty", "bright",
	}
	nameRight = []string{
		"lovelace", "turing", "hopper", "ritchie", "thompson", "torvalds", "knuth", "dijkstra", "hamilton", "liskov",
		"curie", "noether", "euler", "gauss", "shannon", "babbage", "kernighan", "pike", "cerf", "lamport",
		"goldwasser", "wozniak", "mccarthy", "backus", "hoare", "tarjan", "perlman", "allen", "bartik", "clarke",
		"darwin", "einstein", "feynman", "franklin", "galileo", "hawking", "hypatia", "johnson", "kepler", "lalande",
		"meitner", "newton", "pascal", "ramanujan", "sammet", "tesla", "wilson", "yonath", "zhukovsky", "morse",
	}
)

// randomName returns a generated container name such as "brave_lovelace".
func randomName() string {
	pick := func(list []string) string {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(list))))
		if err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		return list[n.Int64()]
	}
	return pick(nameLeft) + "_" + pick(nameRight)
}
