#[test]
fn perf() {
    for lines in [1000usize, 10000] {
        let mut s = String::from("use std.objectives.{sft, grpo}\n\nexperiment generated {\n  seed = 1\n  model policy = preset(\"tiny\")\n  data train = task(\"arith\", split = train, size = 100, difficulty = 2)\n\n");
        let mut i = 0;
        while s.lines().count() < lines { s.push_str(&format!("  // chunk {i}\n  reward correct_{i}(s) = if number(answer(s.completion)) == number(s.answer) then 1.0 else 0.0\n  rollout explore_{i} = sample(policy, n = 4, temperature = 1.0, max_tokens = 32 tokens)\n  stage rl_{i} {{\n    data = train\n    steps = 10\n    batch = 8 prompts\n    rollout = explore_{i}\n    objective = grpo(reward = correct_{i}, beta = 0.0)\n    optimizer = adamw(lr = cosine(1e-4 -> 1e-5, warmup = 2 steps))\n  }}\n\n")); i += 1; }
        s.push_str("}\n");
        let t = std::time::Instant::now();
        let p = post_compiler::syntax::parse(&s);
        let tp = t.elapsed();
        let c = post_compiler::compile_source(&post_compiler::MemoryFs::new(), "g.post", s.clone());
        let tc = t.elapsed();
        println!("{lines}: parse {:?} total {:?} errs {} {:?}", tp, tc, c.diagnostics.len(), c.diagnostics.first().map(|d| &d.message));
        let _ = p;
    }
}
