"""Realistic (prediction, reference) pairs written for lmmhost.

Each entry is (answer as a model writes it, reference as datasets store it,
category). `compare.py` wraps the prediction in one of a few completion
templates (boxed, boxed inside <answer>, "$...$" in a sentence) so both
verifiers see what a reward rule sees: a completion and a gold answer.
"""

PAIRS = [
    # --- integers and decimals
    ("42", "42", "int"), ("42", "43", "int"), ("-7", "-7", "int"), ("-7", "7", "int"),
    ("007", "7", "int"), ("1,000", "1000", "int"), ("12,345", "12345", "int"), ("1000000", "10^6", "int"),
    ("3.0", "3", "decimal"), ("0.50", "0.5", "decimal"), (".75", "0.75", "decimal"), ("2.5", "2.50", "decimal"),
    ("0.3", "0.33", "decimal"), ("3.14", "3.14159", "decimal"), ("-0.25", "-\\frac{1}{4}", "decimal"),
    ("7425000", "7425001", "int"), ("123456789", "123456789", "int"), ("0", "0", "int"), ("0", "-0", "int"),
    ("100", "1e2", "sci"), ("2.5 \\times 10^{-3}", "0.0025", "sci"), ("6.02\\times10^{23}", "6.02 \\times 10^{23}", "sci"),
    ("3 \\times 10^8", "300000000", "sci"), ("1.5 \\cdot 10^{4}", "15000", "sci"), ("4\\times 10^{5}", "4\\times 10^{6}", "sci"),
    # --- fractions
    ("\\frac{1}{2}", "0.5", "frac"), ("\\dfrac{3}{4}", "0.75", "frac"), ("\\tfrac{2}{3}", "\\frac{2}{3}", "frac"),
    ("3/4", "\\frac{3}{4}", "frac"), ("\\frac{6}{8}", "\\frac{3}{4}", "frac"), ("\\frac{1}{3}", "0.3333", "frac"),
    ("\\frac{1}{3}", "0.333333", "frac"), ("-\\frac{5}{2}", "-2.5", "frac"), ("\\frac{-5}{2}", "-\\frac{5}{2}", "frac"),
    ("\\frac{5}{2}", "\\frac{2}{5}", "frac"), ("\\frac{7}{12}", "\\frac{7}{13}", "frac"), ("\\frac12", "\\frac{1}{2}", "frac"),
    ("2\\frac{1}{2}", "\\frac{5}{2}", "mixed"), ("1\\frac{3}{4}", "1.75", "mixed"), ("3\\frac{1}{3}", "\\frac{10}{3}", "mixed"),
    ("\\frac{22}{7}", "\\pi", "frac"), ("\\frac{100}{3}", "33.33", "frac"), ("\\frac{1}{12}", "0.0833333333", "frac"),
    ("{1}/{4}", "\\frac14", "frac"), ("\\frac{\\frac{1}{2}}{3}", "\\frac{1}{6}", "frac"),
    # --- percentages
    ("50\\%", "50", "percent"), ("50\\%", "0.5", "percent"), ("50\\%", "\\frac{1}{2}", "percent"), ("25\\%", "0.5", "percent"),
    ("12.5\\%", "12.5", "percent"), ("12.5\\%", "0.125", "percent"), ("40", "40\\%", "percent"), ("0.4", "40\\%", "percent"),
    ("30\\%", "3", "percent"), ("75 \\%", "75\\%", "percent"), ("80 percent", "80", "percent"),
    # --- radicals and pi
    ("2\\sqrt{3}", "\\sqrt{12}", "radical"), ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", "radical"), ("\\sqrt{8}", "2\\sqrt{2}", "radical"),
    ("3\\sqrt{2}", "2\\sqrt{3}", "radical"), ("\\sqrt[3]{27}", "3", "radical"), ("\\sqrt[3]{16}", "2\\sqrt[3]{2}", "radical"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", "radical"), ("\\sqrt{3}", "1.732", "radical"), ("\\sqrt{3}", "1.7320508", "radical"),
    ("5\\sqrt{5}", "\\sqrt{125}", "radical"), ("\\sqrt{50}", "5\\sqrt2", "radical"), ("4+2\\sqrt{3}", "2(2+\\sqrt{3})", "radical"),
    ("\\frac{2}{\\sqrt{3}}", "\\frac{2\\sqrt{3}}{3}", "radical"), ("1+\\sqrt{5}", "1-\\sqrt{5}", "radical"),
    ("2\\pi", "2\\pi", "pi"), ("\\pi r^2", "r^2\\pi", "pi"), ("4\\pi", "12.566", "pi"), ("\\frac{\\pi}{3}", "\\pi/3", "pi"),
    ("\\frac{4}{3}\\pi", "\\frac{4\\pi}{3}", "pi"), ("\\pi", "3.14", "pi"), ("36\\pi", "36 \\pi", "pi"), ("9\\pi", "18\\pi", "pi"),
    ("\\frac{\\pi}{6}", "30^\\circ", "pi"), ("100\\pi \\text{ cm}^2", "100\\pi", "pi"),
    # --- degrees and units
    ("30^\\circ", "30", "degree"), ("30^{\\circ}", "30", "degree"), ("45°", "45", "degree"), ("60 degrees", "60", "degree"),
    ("120^\\circ", "60", "degree"), ("90^\\circ", "90^{\\circ}", "degree"),
    ("12 \\text{ cm}", "12", "unit"), ("12\\text{cm}^2", "12", "unit"), ("5 \\mbox{ m}", "5", "unit"), ("18 \\text{ square units}", "18", "unit"),
    ("\\$15.50", "15.5", "unit"), ("15 dollars", "15", "unit"), ("3 hours", "3", "unit"), ("60 \\text{ km/h}", "60", "unit"),
    ("24 \\text{ meters}", "24", "unit"), ("7\\text{ inches}", "8", "unit"), ("2.5\\,\\mathrm{kg}", "2.5", "unit"),
    ("5 apples", "5", "unit"), ("18 \\text{ marbles}", "18", "unit"), ("3 boxes", "4", "unit"),
    ("9\\ \\text{cm}^3", "9", "unit"), ("12\\text{ ways}", "12", "unit"), ("150 \\text{ students}", "150", "unit"),
    # --- text cleanup
    ("\\text{18}", "18", "text"), ("\\left(\\frac{1}{2}\\right)", "\\frac{1}{2}", "text"), ("\\!\\!12", "12", "text"),
    ("\\displaystyle \\frac{3}{5}", "0.6", "text"), ("$\\frac{3}{5}$", "\\frac{3}{5}", "text"), ("1\\,000", "1000", "text"),
    ("\\text{yes}", "Yes", "text"), ("\\text{No}", "yes", "text"), ("\\textbf{7}", "7", "text"),
    # --- "variable =" prefixes and equations
    ("x = 3", "3", "var-eq"), ("x=3", "x = 3", "var-eq"), ("y = 2x + 1", "2x+1", "var-eq"), ("n = 12", "12", "var-eq"),
    ("a_1 = 5", "5", "var-eq"), ("k = -2", "2", "var-eq"), ("\\theta = \\frac{\\pi}{4}", "\\frac{\\pi}{4}", "var-eq"),
    ("f(x) = x^2 + 1", "x^2+1", "var-eq"), ("x = 2, y = 3", "(2, 3)", "var-eq"), ("y = 3x - 2", "y = 3x + 2", "var-eq"),
    ("y=-\\frac{1}{2}x+3", "y = 3 - \\frac{x}{2}", "equation"), ("x^2 + y^2 = 25", "y^2 + x^2 = 25", "equation"),
    ("2x + 3y = 6", "3y + 2x = 6", "equation"), ("x + y = 10", "x + y = 12", "equation"),
    # --- inequalities
    ("x > 5", "x > 5", "ineq"), ("x \\geq 5", "5 \\leq x", "ineq"), ("x \\ge 2", "x > 2", "ineq"), ("x < -1", "x<-1", "ineq"),
    ("x \\leq 3", "x \\geq 3", "ineq"), ("x \\in [2, 5]", "[2,5]", "ineq"),
    # --- tuples (ordered)
    ("(1, 2)", "(1,2)", "tuple"), ("(2, 1)", "(1, 2)", "tuple"), ("(3, -4)", "(3,-4)", "tuple"), ("(\\frac{1}{2}, 3)", "(0.5, 3)", "tuple"),
    ("(1, 2, 3)", "(1,2,3)", "tuple"), ("(1, 2, 3)", "(3, 2, 1)", "tuple"), ("(-1, \\sqrt{2})", "(-1,\\sqrt2)", "tuple"),
    ("(0, 0)", "(0,0,0)", "tuple"), ("\\left( 2, -3 \\right)", "(2,-3)", "tuple"), ("(4,5)", "(4,6)", "tuple"),
    # --- sets and lists (unordered)
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", "set"), ("\\{1,2\\}", "\\{1,3\\}", "set"), ("1, 2, 3", "3, 2, 1", "set"),
    ("-2, 3", "3, -2", "set"), ("x = 1, x = 2", "1, 2", "set"), ("1 \\text{ and } 2", "1, 2", "set"), ("2 \\text{ or } -2", "\\pm 2", "set"),
    ("\\pm 3", "3, -3", "set"), ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}, 1-\\sqrt{2}", "set"), ("\\{-1, 1\\}", "\\{1\\}", "set"),
    ("\\{\\frac{1}{2}, 2\\}", "\\{0.5, 2\\}", "set"), ("\\{2, 4, 6\\}", "\\{2, 4, 6, 8\\}", "set"), ("\\emptyset", "\\emptyset", "set"),
    ("3, 5", "5, 3", "set"), ("1,2,3,4", "1,2,3", "set"),
    # --- intervals (brackets matter)
    ("[0, 1)", "[0,1)", "interval"), ("[0, 1)", "(0, 1]", "interval"), ("(0, 1)", "[0, 1]", "interval"),
    ("(-\\infty, 3]", "(-\\infty,3]", "interval"), ("(-\\infty, 3)", "(-\\infty,3]", "interval"), ("[2, \\infty)", "[2,\\infty)", "interval"),
    ("(-\\infty, -1) \\cup (1, \\infty)", "(1, \\infty) \\cup (-\\infty, -1)", "interval"), ("(-\\infty, -1] \\cup [1, \\infty)", "(-\\infty, -1) \\cup (1, \\infty)", "interval"),
    ("[-2, 7]", "[-2,7]", "interval"), ("[\\frac{1}{2}, 2]", "[0.5, 2]", "interval"), ("(-3, 3)", "(-3,3)", "interval"),
    ("(2, 5]", "(2, 5)", "interval"), ("\\left[ 1, 4 \\right)", "[1,4)", "interval"),
    # --- multiple choice letters
    ("B", "B", "choice"), ("(B)", "B", "choice"), ("B", "C", "choice"), ("\\text{B}", "B", "choice"), ("b", "B", "choice"),
    ("D", "D", "choice"), ("(A)", "(A)", "choice"), ("A", "D", "choice"), ("\\text{(C)}", "C", "choice"), ("E", "e", "choice"),
    # --- symbolic expressions
    ("2x+1", "1+2x", "symbolic"), ("2x + 1", "1 + 2*x", "symbolic"), ("\\frac{x}{2}", "x/2", "symbolic"), ("x^2-1", "(x-1)(x+1)", "symbolic"),
    ("(x+1)^2", "x^2+2x+1", "symbolic"), ("(x+1)^2", "x^2+1", "symbolic"), ("3(a+b)", "3a+3b", "symbolic"), ("a^2 b", "b a^2", "symbolic"),
    ("\\frac{1}{x+1}", "(x+1)^{-1}", "symbolic"), ("x^{3}", "x\\cdot x\\cdot x", "symbolic"), ("2^{n+1}", "2 \\cdot 2^n", "symbolic"),
    ("\\frac{n(n+1)}{2}", "\\frac{n^2+n}{2}", "symbolic"), ("\\frac{n(n+1)}{2}", "\\frac{n(n-1)}{2}", "symbolic"),
    ("\\sin^2 x + \\cos^2 x", "1", "symbolic"), ("2\\sin x \\cos x", "\\sin 2x", "symbolic"), ("e^{2x}", "(e^x)^2", "symbolic"),
    ("\\ln(x^2)", "2\\ln x", "symbolic"), ("\\log_2 8", "3", "symbolic"), ("\\sqrt{x^2}", "|x|", "symbolic"), ("x - y", "y - x", "symbolic"),
    ("4x^2 - 9", "(2x-3)(2x+3)", "symbolic"), ("x^2+5x+6", "(x+2)(x+3)", "symbolic"), ("x^2+5x+6", "(x+1)(x+6)", "symbolic"),
    ("\\frac{a+b}{c}", "\\frac{a}{c}+\\frac{b}{c}", "symbolic"), ("\\frac{1}{a}+\\frac{1}{b}", "\\frac{a+b}{ab}", "symbolic"),
    ("3x", "3*x", "symbolic"), ("-x+4", "4-x", "symbolic"), ("x^2", "2x", "symbolic"), ("\\frac{x^2}{4}", "0.25x^2", "symbolic"),
    ("2^{10}", "1024", "symbolic"), ("10!", "3628800", "symbolic"), ("\\binom{5}{2}", "10", "symbolic"), ("5!", "100", "symbolic"),
    ("\\frac{2^{10}-1}{3}", "341", "symbolic"), ("e", "2.71828", "symbolic"), ("e^2", "7.389", "symbolic"),
    # --- garbage / mismatched shapes
    ("", "5", "empty"), ("\\text{I don't know}", "5", "garbage"), ("5", "(5, 6)", "shape"), ("\\{5\\}", "5", "shape"),
    ("(1,2)", "\\{1,2\\}", "shape"), ("[1,2]", "\\{1, 2\\}", "shape"), ("x", "y", "symbolic"), ("2", "x", "symbolic"),
]

# How a model writes the final answer around the value (index chosen per pair).
TEMPLATES = [
    "{thought} Therefore, the answer is $\\boxed{{{ans}}}$.",
    "<think>{thought}</think><answer>\\boxed{{{ans}}}</answer>",
    "{thought}\n\n**Final Answer**\n\\[\n\\boxed{{{ans}}}\n\\]",
    "<think>{thought}</think>\nThe final answer is \\boxed{{{ans}}}",
]

THOUGHTS = [
    "Let me compute step by step. First we simplify, then check the result.",
    "We set up the equation and solve it carefully, checking each case.",
    "Using the figure, the relevant lengths follow from similar triangles.",
    "Counting all the cases gives the total below.",
]

# References as datasets store them: bare, in $...$, or boxed in $...$ (LMM-R1).
REFERENCE_STYLES = ["{ref}", "${ref}$", "$\\boxed{{{ref}}}$"]
