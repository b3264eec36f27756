//! Generation: prompt -> next-token distribution -> decode -> append -> repeat.
//! (Not built yet.)
