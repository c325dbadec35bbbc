"""The Noisy Student loop driver (tools/run_noisy_student.py): stages run as child processes."""
