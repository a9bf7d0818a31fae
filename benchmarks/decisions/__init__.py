"""Decision benchmark: promgate's sequential judge against Flagger-, Argo- and Kayenta-style
judges on the same simulated request streams. Run ``make bench-decisions``; see README.md."""
