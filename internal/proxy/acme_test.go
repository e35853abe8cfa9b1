package proxy

import "testing"

func TestChallengeToken(t *testing.T) {
	for _, tt := range []struct {
		path, token string
		ok          bool
	}{
		{"/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", true},
		{"/.well-known/acme-challenge/a-b_c", "a-b_c", true},
		{"/.well-known/acme-challenge/", "", false},
		{"/.well-known/acme-challenge/a/b", "", false},
		{"/.well-known/acme-challenge/a.b", "", false},
		{"/.well-known/acme-challengeX", "", false},
		{"/", "", false},
	} {
		if tok, ok := ChallengeToken(tt.path); tok != tt.token || ok != tt.ok {
			t.Errorf("ChallengeToken(%q) = %q, %v; want %q, %v", tt.path, tok, ok, tt.token, tt.ok)
		}
	}
}
