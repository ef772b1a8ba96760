# Sourced by scripts/setup.sh and scripts/gpu-pack.sh: which tch release binds
# which PyTorch release (tch checks the match when it builds).
tch_for_torch() {
    case "${1%%+*}" in
        2.13.*) echo 0.26.0 ;;
        2.11.*) echo 0.24.0 ;;
        *) return 1 ;;
    esac
}
SUPPORTED_TORCH="2.13.0 2.11.0"
