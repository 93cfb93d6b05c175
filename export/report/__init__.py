"""Reports of deploy results: PNG plots and the teacher-vs-student summary of `kdforge run`."""

from kdforge.export.report.plots import plot_latency_vs_batch, plot_teacher_vs_student
from kdforge.export.report.summary import comparison_rows, write_report

__all__ = ["comparison_rows", "plot_latency_vs_batch", "plot_teacher_vs_student", "write_report"]
